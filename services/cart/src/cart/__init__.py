"""Agora cart: one open cart per user."""
