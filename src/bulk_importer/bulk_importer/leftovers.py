"""Tell what a failed entry leaves in AWS IoT, so that the report and AWS IoT agree.

Thingpress reports rather than undoes (docs/ARCHITECTURE.md, "Partial effects"): the importer's role
can never delete, detach or deactivate anything (a least-privilege rule the template tests hold),
so an entry that fails for good after some of its calls succeeded names, in its reason, the state it
leaves: the certificate (registered and ACTIVE, attached to the thing or to none, with which
policies) and the thing (and the groups it joined). Conflicts that can be seen before any write
(an existing certificate that is not ACTIVE, attached elsewhere or without room for the policies)
are refused before the first write, so they leave nothing.
"""

from __future__ import annotations

from bulk_importer.iot_calls import Effects
from layer_utils.messages import ImportEntry


def left_in_iot(entry: ImportEntry, effects: Effects) -> str:
    """Return the sentence that names what ``entry`` leaves in AWS IoT after a permanent failure.

    Args:
        entry: the entry that failed.
        effects: what its attempt did and found.

    Returns:
        Text to append to the reason (empty when the entry left nothing of its own), e.g.
        `` Left in AWS IoT: certificate … (ACTIVE, attached to no thing).``

    """
    if not (effects.registered or effects.thing_created or effects.attached or effects.already_attached):
        return ""
    parts: list[str] = []
    if effects.certificate_active:
        attached = effects.attached or effects.already_attached
        where = f"attached to thing {entry.thing_name}" if attached else "attached to no thing"
        policies = sorted(effects.had_policies | set(effects.policies))
        with_policies = f", with policies {', '.join(policies)}" if policies else ", with no policy"
        parts.append(f"certificate {entry.certificate_id} (ACTIVE, {where}{with_policies})")
    if effects.thing_created or effects.attached or effects.already_attached:
        made = "created by this import" if effects.thing_created else "existing"
        groups = f", in thing groups {', '.join(effects.groups)}" if effects.groups else ""
        parts.append(f"thing {entry.thing_name} ({made}{groups})")
    return f" Left in AWS IoT: {'; '.join(parts)}."
