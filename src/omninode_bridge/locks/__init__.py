"""The lock engine: async client, sync facade, listener, migrations and SQL."""
