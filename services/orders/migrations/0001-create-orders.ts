import { DataTypes } from "sequelize";
import type { Migration } from "../../../mixins/db.mixin";

export const createOrders: Migration = {
	name: "0001-create-orders",
	async up(qi) {
		await qi.createTable("orders", {
			id: { type: DataTypes.STRING(36), primaryKey: true },
			user_id: { type: DataTypes.INTEGER, allowNull: false },
			status: { type: DataTypes.STRING(16), allowNull: false },
			// The lines as priced by the catalog at reservation (JSON): an order never changes them.
			items: { type: DataTypes.TEXT, allowNull: false },
			total_cents: { type: DataTypes.BIGINT, allowNull: false },
			currency: { type: DataTypes.STRING(3), allowNull: false },
			idempotency_key: { type: DataTypes.STRING(200), allowNull: true },
			request_hash: { type: DataTypes.STRING(64), allowNull: true },
			created_at: { type: DataTypes.DATE, allowNull: false },
			updated_at: { type: DataTypes.DATE, allowNull: false },
		});
		// One order per user and key, enforced by the database, not by a check before the insert.
		await qi.addIndex("orders", ["user_id", "idempotency_key"], { unique: true, name: "orders_user_idempotency_key" });
		// A customer's history, newest first.
		await qi.addIndex("orders", ["user_id", "created_at"], { name: "orders_user_created_at" });
		await qi.addIndex("orders", ["created_at"], { name: "orders_created_at" });
	},
	async down(qi) {
		await qi.dropTable("orders");
	},
};
