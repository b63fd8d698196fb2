"""Where the nodes come from: one module per provider, all meeting providers.base.Provider."""
