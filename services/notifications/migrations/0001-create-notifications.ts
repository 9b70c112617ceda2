import { DataTypes, Op } from "sequelize";
import type { Migration } from "../../../mixins/db.mixin";

export const createNotifications: Migration = {
	name: "0001-create-notifications",
	async up(qi) {
		await qi.createTable("notifications", {
			id: { type: DataTypes.UUID, primaryKey: true },
			user_id: { type: DataTypes.INTEGER, allowNull: false },
			event_id: { type: DataTypes.UUID, allowNull: false },
			type: { type: DataTypes.STRING(32), allowNull: false },
			order_id: { type: DataTypes.UUID, allowNull: true },
			channel: { type: DataTypes.STRING(16), allowNull: false },
			subject: { type: DataTypes.STRING(255), allowNull: false },
			body: { type: DataTypes.TEXT, allowNull: false },
			status: { type: DataTypes.STRING(16), allowNull: false },
			attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
			locked_until: { type: DataTypes.DATE, allowNull: true },
			last_error: { type: DataTypes.STRING(500), allowNull: true },
			created_at: { type: DataTypes.DATE, allowNull: false },
			sent_at: { type: DataTypes.DATE, allowNull: true },
		});
		await qi.addConstraint("notifications", {
			type: "check",
			fields: ["status"],
			where: { status: { [Op.in]: ["pending", "sent", "failed"] } },
			name: "notifications_status_known",
		});
		// Indexes after the constraint: on SQLite, addConstraint rebuilds the table and drops its indexes.
		// One notification per event, whatever the number of deliveries: the consumer's INSERT … ON
		// CONFLICT (event_id) DO NOTHING relies on this index, never on a read before the write.
		await qi.addIndex("notifications", ["event_id"], { unique: true, name: "notifications_event_id_unique" });
		// GET /api/notifications: the caller's rows, newest first.
		await qi.addIndex("notifications", {
			fields: ["user_id", { name: "created_at", order: "DESC" }],
			name: "notifications_user_created_at",
		});
	},
	async down(qi) {
		await qi.dropTable("notifications");
	},
};
