"""Agora inventory: stock per SKU and the reservations of orders."""
