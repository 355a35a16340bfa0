"""Agora notifications: messages to users."""
