"""The profile database schema: numbered SQL files applied in order by client/store.py."""
