/** The products table (only the products service imports this). */
import { DataTypes } from "sequelize";
import type { ModelDefinition } from "../../mixins/db.mixin";

export interface ProductRow {
	id: number;
	sku: string;
	name: string;
	description: string;
	category: string;
	priceCents: number;
	currency: string;
	stock: number;
	createdAt: Date | string;
	updatedAt: Date | string;
}

export interface Product {
	id: number;
	sku: string;
	name: string;
	description: string;
	category: string;
	priceCents: number;
	currency: string;
	stock: number;
	createdAt: string;
	updatedAt: string;
}

/** The columns of a product as its fields, for the statements the service writes itself (lib/sql). */
export const PRODUCT_COLUMNS =
	'id, sku, name, description, category, price_cents AS "priceCents", currency, stock, created_at AS "createdAt", updated_at AS "updatedAt"';

export const ProductModel: ModelDefinition = {
	name: "product",
	define: {
		id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
		sku: { type: DataTypes.STRING(64), allowNull: false, unique: true },
		name: { type: DataTypes.STRING(200), allowNull: false },
		description: { type: DataTypes.TEXT, allowNull: false, defaultValue: "" },
		category: { type: DataTypes.STRING(100), allowNull: false },
		priceCents: { type: DataTypes.INTEGER, allowNull: false, field: "price_cents" },
		currency: { type: DataTypes.STRING(3), allowNull: false, defaultValue: "TRY" },
		stock: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
		createdAt: { type: DataTypes.DATE, field: "created_at" },
		updatedAt: { type: DataTypes.DATE, field: "updated_at" },
	},
	options: { tableName: "products", timestamps: true },
};

/**
 * What the catalog search matches on PostgreSQL: name and description, case-folded, joined by a
 * unit separator (chr(31)) so that a search text without one never matches across the two. The
 * trigram index of migration 0004-search-index was on exactly this expression; since
 * 0005-search-column it is stored as SEARCH_COLUMN (generated), which the search reads and the
 * trigram index covers. The model does not list the column: no answer carries it.
 */
export const SEARCH_EXPRESSION = "(lower(name) || chr(31) || lower(description))";
export const SEARCH_COLUMN = "search_text";
export const SEARCH_SEPARATOR = String.fromCharCode(31);

/**
 * The sort key of a search's page on PostgreSQL: the column, but as an expression no index serves.
 * Otherwise, for a search it expects to match many rows, the planner walks the sort column's index
 * (products_created_at) and rechecks every row until it has a page, which costs the rows it walks,
 * not the matches: "product 1" at 100,000 bench products walks 80,000 rows (78 ms, where the
 * trigram index and a top-N sort of its 11,112 matches take 26 ms). Through the trigram index a
 * page costs at most about what the exact total's count over the same matches costs.
 */
export const searchSortKey = (column: string): string => `COALESCE(${column}, ${column})`;
