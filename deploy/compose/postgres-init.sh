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
# A service's role and its database: role_and_database NAME PASSWORD.
role_and_database() {
  psql -v ON_ERROR_STOP=1 -d postgres -v name="$1" -v password="$2" <<"SQL"
SELECT format('CREATE ROLE %I LOGIN', :'name')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')\gexec
ALTER ROLE :"name" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')\gexec
REVOKE CONNECT ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"name" TO :"name";
SQL
}
role_and_database identity "$AGORA_IDENTITY_DATABASE_PASSWORD"
role_and_database catalog "$AGORA_CATALOG_DATABASE_PASSWORD"
role_and_database inventory "$AGORA_INVENTORY_DATABASE_PASSWORD"
role_and_database payments "$AGORA_PAYMENTS_DATABASE_PASSWORD"
role_and_database orders "$AGORA_ORDERS_DATABASE_PASSWORD"
role_and_database cart "$AGORA_CART_DATABASE_PASSWORD"
role_and_database notifications "$AGORA_NOTIFICATIONS_DATABASE_PASSWORD"
role_and_database shipping "$AGORA_SHIPPING_DATABASE_PASSWORD"
