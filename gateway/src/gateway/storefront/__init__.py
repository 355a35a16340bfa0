"""The storefront: the shop's pages, served by the gateway at ``/``.

Rendered on the server (Jinja2 templates under ``templates/storefront/``) from the services'
APIs, called through the chassis client with the session's token; a little plain JavaScript
(``static/storefront.js``) follows an order's status live. Without JavaScript every page still
works and shows the current state.
"""

from gateway.storefront.pages import storefront_router

__all__ = ["storefront_router"]
