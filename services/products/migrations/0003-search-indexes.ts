import type { Migration } from "../../../mixins/db.mixin";

/**
 * The catalog search (`q`: a substring of name or description, case-folded with lower() on
 * PostgreSQL) read every row: its p99 grew with the catalog (bench growth, 1k → 100k). Trigram
 * GIN indexes on the folded columns let PostgreSQL find the rows of a substring without a scan.
 * pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner, which each service's role
 * is, may create it. Where it cannot be created the search still works, by a scan, and the
 * migration says so. SQLite has no such index; its catalog is the embedded default's.
 */
export const createSearchIndexes: Migration = {
	name: "0003-search-indexes",
	async up(_qi, sequelize) {
		if (sequelize.getDialect() !== "postgres") return;
		try {
			await sequelize.query("CREATE EXTENSION IF NOT EXISTS pg_trgm");
		} catch (err) {
			console.warn(`products: pg_trgm is not available (${(err as Error).message}); search scans the catalog`);
			return;
		}
		await sequelize.query("CREATE INDEX IF NOT EXISTS products_name_trgm ON products USING gin (lower(name) gin_trgm_ops)");
		await sequelize.query("CREATE INDEX IF NOT EXISTS products_description_trgm ON products USING gin (lower(description) gin_trgm_ops)");
	},
	async down(_qi, sequelize) {
		if (sequelize.getDialect() !== "postgres") return;
		await sequelize.query("DROP INDEX IF EXISTS products_name_trgm");
		await sequelize.query("DROP INDEX IF EXISTS products_description_trgm");
	},
};
