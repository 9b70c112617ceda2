/** The users table (only the users service imports this). */
import { DataTypes } from "sequelize";
import type { ModelDefinition } from "../../mixins/db.mixin";

export interface UserRow {
	id: number;
	email: string;
	name: string;
	role: "customer" | "admin";
	passwordHash: string;
	createdAt: Date;
	updatedAt: Date;
}

export const UserModel: ModelDefinition = {
	name: "user",
	define: {
		id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
		email: { type: DataTypes.STRING(254), allowNull: false, unique: true },
		name: { type: DataTypes.STRING(100), allowNull: false },
		role: { type: DataTypes.STRING(16), allowNull: false, defaultValue: "customer" },
		passwordHash: { type: DataTypes.STRING(200), allowNull: false, field: "password_hash" },
		createdAt: { type: DataTypes.DATE, field: "created_at" },
		updatedAt: { type: DataTypes.DATE, field: "updated_at" },
	},
	options: { tableName: "users", timestamps: true },
};
