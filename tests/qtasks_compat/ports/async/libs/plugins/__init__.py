"""Init example plugins."""
