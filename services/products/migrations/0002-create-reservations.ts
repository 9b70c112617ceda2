import { DataTypes } from "sequelize";
import type { Migration } from "../../../mixins/db.mixin";

/** Stock held for an order: taken at reserve, given back at release, exactly once per order id. */
export const createReservations: Migration = {
	name: "0002-create-reservations",
	async up(qi) {
		await qi.createTable("reservations", {
			order_id: { type: DataTypes.STRING(36), primaryKey: true },
			// The lines as reserved, with the catalog's names and prices at that moment (JSON).
			lines: { type: DataTypes.TEXT, allowNull: false },
			status: { type: DataTypes.STRING(16), allowNull: false },
			expires_at: { type: DataTypes.DATE, allowNull: false },
			created_at: { type: DataTypes.DATE, allowNull: false },
			updated_at: { type: DataTypes.DATE, allowNull: false },
		});
		// The sweeper's question: held reservations past their time.
		await qi.addIndex("reservations", ["status", "expires_at"], { name: "reservations_status_expires_at" });
	},
	async down(qi) {
		await qi.dropTable("reservations");
	},
};
