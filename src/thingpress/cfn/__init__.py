"""CloudFormation/SAM templates for the local stack: loading (`template`) and intrinsics (`resolver`).

Only what a local emulation needs is implemented; anything else raises `TemplateError` naming the
intrinsic and where it was met, rather than guessing.
"""

from thingpress.cfn.resolver import Resolver
from thingpress.cfn.template import NO_VALUE, TemplateError, function_properties, load_template, merge_globals

__all__ = [
    "NO_VALUE",
    "Resolver",
    "TemplateError",
    "function_properties",
    "load_template",
    "merge_globals",
]
