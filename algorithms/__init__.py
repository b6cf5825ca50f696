"""Processing algorithms: thin wrappers (parameters -> one call into model/ -> outputs)."""
