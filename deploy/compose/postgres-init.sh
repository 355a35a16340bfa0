#!/bin/sh
# Rendered by `agora deploy render` from topology.toml: do not edit, render again (ADR 29).
# Run by the postgres-init step at every start: it creates what is missing and sets each
# role's password from the env file, so a new service or a changed password takes effect.
set -eu
psql -v ON_ERROR_STOP=1 -d postgres <<"SQL"
-- Nobody but the superuser connects to the maintenance databases.
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
SQL
# identity: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_IDENTITY_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "identity" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'identity')\gexec
ALTER ROLE "identity" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "identity" OWNER "identity"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'identity')\gexec
REVOKE CONNECT ON DATABASE "identity" FROM PUBLIC;
GRANT CONNECT ON DATABASE "identity" TO "identity";
SQL
# catalog: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_CATALOG_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "catalog" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalog')\gexec
ALTER ROLE "catalog" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "catalog" OWNER "catalog"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'catalog')\gexec
REVOKE CONNECT ON DATABASE "catalog" FROM PUBLIC;
GRANT CONNECT ON DATABASE "catalog" TO "catalog";
SQL
# inventory: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_INVENTORY_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "inventory" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inventory')\gexec
ALTER ROLE "inventory" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "inventory" OWNER "inventory"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'inventory')\gexec
REVOKE CONNECT ON DATABASE "inventory" FROM PUBLIC;
GRANT CONNECT ON DATABASE "inventory" TO "inventory";
SQL
# payments: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_PAYMENTS_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "payments" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments')\gexec
ALTER ROLE "payments" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "payments" OWNER "payments"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'payments')\gexec
REVOKE CONNECT ON DATABASE "payments" FROM PUBLIC;
GRANT CONNECT ON DATABASE "payments" TO "payments";
SQL
# orders: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_ORDERS_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "orders" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders')\gexec
ALTER ROLE "orders" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "orders" OWNER "orders"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orders')\gexec
REVOKE CONNECT ON DATABASE "orders" FROM PUBLIC;
GRANT CONNECT ON DATABASE "orders" TO "orders";
SQL
# cart: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_CART_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "cart" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cart')\gexec
ALTER ROLE "cart" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "cart" OWNER "cart"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'cart')\gexec
REVOKE CONNECT ON DATABASE "cart" FROM PUBLIC;
GRANT CONNECT ON DATABASE "cart" TO "cart";
SQL
# notifications: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_NOTIFICATIONS_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "notifications" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'notifications')\gexec
ALTER ROLE "notifications" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "notifications" OWNER "notifications"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'notifications')\gexec
REVOKE CONNECT ON DATABASE "notifications" FROM PUBLIC;
GRANT CONNECT ON DATABASE "notifications" TO "notifications";
SQL
# shipping: its role and its database.
psql -v ON_ERROR_STOP=1 -d postgres -v password="$AGORA_SHIPPING_DATABASE_PASSWORD" <<"SQL"
SELECT 'CREATE ROLE "shipping" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shipping')\gexec
ALTER ROLE "shipping" WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE "shipping" OWNER "shipping"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shipping')\gexec
REVOKE CONNECT ON DATABASE "shipping" FROM PUBLIC;
GRANT CONNECT ON DATABASE "shipping" TO "shipping";
SQL
