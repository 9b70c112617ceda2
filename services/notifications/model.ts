/** The notifications table (only the notifications service imports this). */
import { DataTypes } from "sequelize";
import type { BusinessEventName } from "../../lib/events";
import type { ModelDefinition } from "../../mixins/db.mixin";

export type ChannelName = "log" | "email";
/** `pending` while a delivery owns it; `sent` or `failed` once, and then never sent again. */
export type NotificationStatus = "pending" | "sent" | "failed";

export interface NotificationRow {
	id: string;
	userId: number;
	eventId: string;
	type: BusinessEventName;
	orderId: string | null;
	channel: ChannelName;
	subject: string;
	body: string;
	status: NotificationStatus;
	/** How many deliveries have taken this notification to send it. */
	attempts: number;
	/** Until when the delivery that took it owns it; another may take it over afterwards (a crash). */
	lockedUntil: Date | string | null;
	lastError: string | null;
	createdAt: Date | string;
	sentAt: Date | string | null;
}

/** API.md's `notification`. */
export interface Notification {
	id: string;
	userId: number;
	eventId: string;
	type: BusinessEventName;
	orderId: string | null;
	channel: ChannelName;
	subject: string;
	body: string;
	status: NotificationStatus;
	createdAt: string;
	sentAt: string | null;
}

/** The columns of a NotificationRow, for the statements written by hand (lib/sql.ts). */
export const NOTIFICATION_COLUMNS =
	'id, user_id AS "userId", event_id AS "eventId", type, order_id AS "orderId", channel, subject, body, status, attempts, ' +
	'locked_until AS "lockedUntil", last_error AS "lastError", created_at AS "createdAt", sent_at AS "sentAt"';

export const NotificationModel: ModelDefinition = {
	name: "notification",
	define: {
		id: { type: DataTypes.UUID, primaryKey: true },
		userId: { type: DataTypes.INTEGER, allowNull: false, field: "user_id" },
		eventId: { type: DataTypes.UUID, allowNull: false, unique: true, field: "event_id" },
		type: { type: DataTypes.STRING(32), allowNull: false },
		orderId: { type: DataTypes.UUID, allowNull: true, field: "order_id" },
		channel: { type: DataTypes.STRING(16), allowNull: false },
		subject: { type: DataTypes.STRING(255), allowNull: false },
		body: { type: DataTypes.TEXT, allowNull: false },
		status: { type: DataTypes.STRING(16), allowNull: false },
		attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
		lockedUntil: { type: DataTypes.DATE, allowNull: true, field: "locked_until" },
		lastError: { type: DataTypes.STRING(500), allowNull: true, field: "last_error" },
		createdAt: { type: DataTypes.DATE, allowNull: false, field: "created_at" },
		sentAt: { type: DataTypes.DATE, allowNull: true, field: "sent_at" },
	},
	// created_at is the time the notification was recorded, set by the insert; there is no updated_at.
	options: { tableName: "notifications", timestamps: false },
};
