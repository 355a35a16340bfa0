"""The storefront: the shop's pages, served by the gateway at ``/``.

Rendered on the server (Jinja2 templates under ``templates/storefront/``) from the services'
APIs, called through the chassis client with the session's token
(:class:`~gateway.storefront.client.ServicesClient`); a little plain JavaScript
(``static/storefront.js``) follows an order's status live. Without JavaScript every page still
works and shows the current state.

One router per page group. Every form's POST checks its CSRF token, and answers with a redirect
(303) when it did what was asked, so that reloading the next page does not send the form again;
when it did not, the same page comes back with the messages beside the fields.
"""

from fastapi import APIRouter

from gateway.storefront import account, cart, catalogue, checkout, orders

ROUTERS: tuple[APIRouter, ...] = (
    catalogue.router,
    account.router,
    cart.router,
    checkout.router,
    orders.router,
)

__all__ = ["ROUTERS"]
