import { DataTypes } from "sequelize";
import type { Migration } from "../../../mixins/db.mixin";

export const createUsers: Migration = {
	name: "0001-create-users",
	async up(qi) {
		await qi.createTable("users", {
			id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
			email: { type: DataTypes.STRING(254), allowNull: false },
			name: { type: DataTypes.STRING(100), allowNull: false },
			role: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "customer" },
			password_hash: { type: DataTypes.STRING(200), allowNull: false },
			created_at: { type: DataTypes.DATE, allowNull: false },
			updated_at: { type: DataTypes.DATE, allowNull: false },
		});
		// Emails are stored lower-cased, so a plain unique index makes registration race-free.
		await qi.addIndex("users", ["email"], { unique: true, name: "users_email_unique" });
	},
	async down(qi) {
		await qi.dropTable("users");
	},
};
