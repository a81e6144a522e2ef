"""ManifestProvider function: manifest intake, vendor parsing, validation and fan-out."""
