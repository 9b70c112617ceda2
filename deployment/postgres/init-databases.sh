#!/bin/bash
# Database per service: one database and one login role for each service that owns data, each
# database owned by its own role and closed to everyone else (CONNECT and TEMPORARY revoked from
# PUBLIC), so a service's credentials open its own database and no other.
#
# Run once by the postgres image's entrypoint (/docker-entrypoint-initdb.d) on an empty data
# directory. The passwords come from the environment that docker-compose.yml gives the postgres
# container; each must match the one in that service's <SERVICE>_DATABASE_URL.
set -eo pipefail

create_service_database() {
	local service="$1" password="$2"
	local name="carsi_${service}"
	if [ -z "$password" ]; then
		echo "init-databases: no password for ${name} (set ${service^^}_DB_PASSWORD)" >&2
		return 1
	fi
	# psql's :"name" and :'password' quote an identifier and a literal: no SQL is built by hand.
	psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
		-v name="$name" -v password="$password" <<-'SQL'
		CREATE ROLE :"name" LOGIN PASSWORD :'password';
		CREATE DATABASE :"name" OWNER :"name";
		REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
	SQL
	# The owner keeps CONNECT and CREATE (it owns the database, and through pg_database_owner the
	# public schema where its migrations create their tables).
	echo "init-databases: created database ${name} owned by role ${name}"
}

# The maintenance database is no service's: only the superuser connects to it.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
	-v name="${POSTGRES_DB:-postgres}" <<-'SQL'
	REVOKE CONNECT, TEMPORARY ON DATABASE :"name" FROM PUBLIC;
SQL

create_service_database users "${USERS_DB_PASSWORD:-}"
create_service_database products "${PRODUCTS_DB_PASSWORD:-}"
create_service_database orders "${ORDERS_DB_PASSWORD:-}"
create_service_database notifications "${NOTIFICATIONS_DB_PASSWORD:-}"
