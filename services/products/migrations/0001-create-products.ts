import { DataTypes, Op } from "sequelize";
import type { Migration } from "../../../mixins/db.mixin";

export const createProducts: Migration = {
	name: "0001-create-products",
	async up(qi) {
		await qi.createTable("products", {
			id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
			sku: { type: DataTypes.STRING(64), allowNull: false },
			name: { type: DataTypes.STRING(200), allowNull: false },
			description: { type: DataTypes.TEXT, allowNull: false, defaultValue: "" },
			category: { type: DataTypes.STRING(100), allowNull: false },
			price_cents: { type: DataTypes.INTEGER, allowNull: false },
			currency: { type: DataTypes.STRING(3), allowNull: false, defaultValue: "TRY" },
			stock: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
			created_at: { type: DataTypes.DATE, allowNull: false },
			updated_at: { type: DataTypes.DATE, allowNull: false },
		});
		// The last line of defence for the rules the service validates: stock and prices never go negative.
		await qi.addConstraint("products", {
			type: "check",
			fields: ["stock"],
			where: { stock: { [Op.gte]: 0 } },
			name: "products_stock_nonnegative",
		});
		await qi.addConstraint("products", {
			type: "check",
			fields: ["price_cents"],
			where: { price_cents: { [Op.gte]: 0 } },
			name: "products_price_nonnegative",
		});
		// Indexes after the constraints: on SQLite, addConstraint rebuilds the table and drops its indexes.
		await qi.addIndex("products", ["sku"], { unique: true, name: "products_sku_unique" });
		// The list's filter and default sort.
		await qi.addIndex("products", ["category", "created_at"], { name: "products_category_created_at" });
		await qi.addIndex("products", ["created_at"], { name: "products_created_at" });
	},
	async down(qi) {
		await qi.dropTable("products");
	},
};
