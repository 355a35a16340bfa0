"""Agora orders: orders and the checkout saga."""
