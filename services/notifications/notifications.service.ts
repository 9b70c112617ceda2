/**
 * notifications: owns one notification per business event (order.created, order.cancelled,
 * user.registered) and sends it through a channel (the log, or email when SMTP_URL is set).
 * Never records an event twice (a unique index on event_id, not a read before the write), never
 * sends again what is sent or failed, never shows a user another user's notifications.
 *
 * Delivery is at least once (lib/channels), and so is sending: a notification is inserted as
 * `pending` and owned by the delivery that inserted it for `claimTtlMs`, sent, then marked `sent`
 * (or `failed` when the channel refuses it for good). A crash between the insert and the mark
 * leaves it `pending`; the event's redelivery takes it over once the owner's time is up and sends
 * it again. A duplicate delivery that arrives while the owner is still sending waits for its
 * outcome instead of sending a second time.
 */
import { randomUUID } from "node:crypto";
import type { Context, Service, ServiceSchema } from "moleculer";
import { Op, type Model } from "sequelize";
import { getConfig, maskUrl } from "../../lib/config";
import { EventDeferredError, InvalidEventError, UnauthorizedError, type FieldError } from "../../lib/errors";
import { BUSINESS_EVENTS, NOTIFICATION_STORED, type BusinessEventName, type BusinessEvents } from "../../lib/events";
import { lifecycle } from "../../lib/service";
import { pageParams } from "../../lib/params";
import { consumer } from "../../lib/channels";
import { METRICS, observeMetric } from "../../lib/metrics";
import { DbMixin, plainRow, type DbMethods, type DbSettings } from "../../mixins/db.mixin";
import { EmailChannel, LogChannel, isPermanentSendError, type NotificationChannel, type Recipient } from "./channels";
import { composeNotification, type NotificationDraft } from "./messages";
import { migrations } from "./migrations";
import { NOTIFICATION_COLUMNS, NotificationModel, type ChannelName, type Notification, type NotificationRow } from "./model";

export interface NotificationsSettings extends DbSettings {
	/** SMTP_URL: email through nodemailer; unset, notifications go to the log. */
	smtpUrl?: string;
	smtpFrom: string;
	/** How long the delivery that took a pending notification owns it before another may take it over. */
	claimTtlMs: number;
	/** A send not done by then is a transient failure. Well below claimTtlMs, so two sends never overlap. */
	sendTimeoutMs: number;
	/** How often a duplicate delivery looks again at a notification another delivery is sending. */
	claimPollMs: number;
}

export interface ListParams {
	page: number;
	pageSize: number;
}
export interface ListResult<T> {
	rows: T[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}
interface Meta {
	user?: { id: number; role: "customer" | "admin" } | null;
}

type EventCheck = (payload: unknown) => true | Array<{ field?: string; message?: string }>;

export interface NotificationsMethods {
	handleEvent<E extends BusinessEventName>(type: E, payload: BusinessEvents[E], ctx?: Context): Promise<Notification>;
	checkEvent(type: string, payload: unknown): asserts payload is BusinessEvents[BusinessEventName];
	insertPending(draft: NotificationDraft, channel: ChannelName): Promise<NotificationRow | null>;
	claim(eventId: string): Promise<boolean>;
	awaitOrTakeOver(draft: NotificationDraft, ctx?: Context): Promise<Notification>;
	deliver(row: NotificationRow, draft: NotificationDraft, ctx?: Context): Promise<Notification>;
	recipientOf(row: NotificationRow, draft: NotificationDraft, channel: NotificationChannel, ctx?: Context): Promise<Recipient>;
	settle(row: NotificationRow, changes: Pick<NotificationRow, "status" | "channel" | "lastError"> & { sentAt?: Date }): Promise<Notification>;
	findByEvent(eventId: string): Promise<NotificationRow | null>;
	listNotifications(userId: number, params: ListParams): Promise<ListResult<Notification>>;
	toNotification(row: Model | NotificationRow): Notification;
}
export type NotificationsThis = Service<NotificationsSettings> &
	DbMethods &
	NotificationsMethods & {
		deliveryChannels: { log: NotificationChannel; email?: NotificationChannel };
		eventChecks: Record<BusinessEventName, EventCheck>;
	};

const config = getConfig();

/**
 * What this service reads from each event, checked before anything is written. Not strict:
 * producers may add fields without breaking their consumers.
 */
const positiveInt = { type: "number", integer: true, positive: true } as const;
const envelopeRules = { eventId: { type: "uuid" }, occurredAt: { type: "string", min: 1 } } as const;
const orderRule = {
	type: "object",
	props: {
		id: { type: "uuid" },
		userId: positiveInt,
		items: {
			type: "array",
			items: {
				type: "object",
				props: { name: { type: "string" }, quantity: positiveInt, unitPriceCents: { type: "number", integer: true, min: 0 } },
			},
		},
		totalCents: { type: "number", integer: true, min: 0 },
		currency: { type: "string", pattern: /^[A-Z]{3}$/ },
	},
} as const;
const EVENT_RULES: Record<BusinessEventName, Record<string, unknown>> = {
	"order.created": { ...envelopeRules, order: orderRule },
	"order.cancelled": { ...envelopeRules, order: orderRule },
	"user.registered": {
		...envelopeRules,
		user: { type: "object", props: { id: positiveInt, email: { type: "string", min: 3, max: 254 }, name: { type: "string", max: 100 } } },
	},
};

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));
const reason = (err: unknown) => String((err as Error)?.message ?? err).slice(0, 500);

/** The send, or a transient failure when it has not finished in time. */
async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
}

const NotificationsService: ServiceSchema<NotificationsSettings> = {
	name: "notifications",
	mixins: [DbMixin({ model: NotificationModel, migrations })],

	settings: {
		databaseUrl: config.databaseUrls.notifications,
		smtpUrl: config.smtp.url,
		smtpFrom: config.smtp.from,
		claimTtlMs: 60_000,
		sendTimeoutMs: 20_000,
		claimPollMs: 250,
	},

	actions: {
		/** GET /api/notifications: the caller's notifications, newest first. */
		list: {
			params: {
				...pageParams,
				$$strict: true,
			},
			handler(this: NotificationsThis, ctx: Context<ListParams, Meta>): Promise<ListResult<Notification>> {
				const userId = ctx.meta.user?.id;
				if (!userId) throw new UnauthorizedError();
				return this.listNotifications(userId, ctx.params);
			},
		},

		/**
		 * What the channel handlers do, as an action of this node only (protected: no other node and
		 * no route can forge an event through it): for tests and for `call notifications.handle` in
		 * the REPL. The durable path is this schema's `channels` (lib/channels), which call handleEvent.
		 */
		handle: {
			visibility: "protected",
			params: {
				type: { type: "enum", values: BUSINESS_EVENTS },
				payload: { type: "object" },
				$$strict: true,
			},
			handler(this: NotificationsThis, ctx: Context<{ type: BusinessEventName; payload: BusinessEvents[BusinessEventName] }>) {
				return this.handleEvent(ctx.params.type, ctx.params.payload, ctx);
			},
		},
	},

	/** The durable path: one queue per event for the group `notifications`, acked after handling. */
	channels: Object.fromEntries(
		BUSINESS_EVENTS.map(type => [
			type,
			consumer("notifications", function (this: Service, ctx: Context<unknown, Record<string, unknown>>) {
				return (this as unknown as NotificationsThis).handleEvent(type, ctx.params as BusinessEvents[typeof type], ctx);
			}),
		]),
	),

	methods: {
		/**
		 * One delivery of a business event. Resolves when the notification is sent, failed for good,
		 * or was already either (the message may be acknowledged). Rejects with EventDeferredError
		 * when it should be delivered again later (a transient send failure, the users service
		 * unreachable, another delivery still sending), and with InvalidEventError for a payload
		 * that will never do (it goes to the dead-letter queue).
		 */
		async handleEvent(this: NotificationsThis, type: BusinessEventName, payload: unknown, ctx?: Context): Promise<Notification> {
			this.checkEvent(type, payload);
			const draft = composeNotification(type, payload);
			const inserted = await this.insertPending(draft, this.deliveryChannels.email ? "email" : "log");
			if (inserted) {
				// Lag: from the event to its stored notification (a duplicate delivery stores nothing).
				const occurred = Date.parse((payload as { occurredAt: string }).occurredAt);
				if (Number.isFinite(occurred)) observeMetric(this.broker, METRICS.notificationsLag, Math.max(0, new Date(inserted.createdAt).getTime() - occurred) / 1000);
				return this.deliver(inserted, draft, ctx);
			}
			return this.awaitOrTakeOver(draft, ctx);
		},

		checkEvent(this: NotificationsThis, type: string, payload: unknown) {
			const check = (this.eventChecks as Record<string, EventCheck>)[type];
			if (!check) throw new InvalidEventError(type, [{ field: "type", message: `Unknown event '${type}'` }]);
			const result = payload !== null && typeof payload === "object" ? check(payload) : [{ field: "payload", message: "The payload must be an object." }];
			if (result !== true)
				throw new InvalidEventError(type, result.map<FieldError>(e => ({ field: e.field ?? "payload", message: e.message ?? "invalid" })));
		},

		/**
		 * INSERT … ON CONFLICT (event_id) DO NOTHING, the same statement on SQLite (≥ 3.24) and
		 * PostgreSQL: the row when this delivery recorded the event (and so owns it), null when some
		 * delivery already had. No error, no aborted transaction, no check-then-insert race.
		 */
		async insertPending(this: NotificationsThis, draft: NotificationDraft, channel: ChannelName): Promise<NotificationRow | null> {
			const now = new Date();
			const row: NotificationRow = {
				id: randomUUID(),
				userId: draft.userId,
				eventId: draft.eventId,
				type: draft.type,
				orderId: draft.orderId,
				channel,
				subject: draft.subject,
				body: draft.body,
				status: "pending",
				attempts: 1,
				lockedUntil: new Date(now.getTime() + this.settings.claimTtlMs),
				lastError: null,
				createdAt: now,
				sentAt: null,
			};
			const { count } = await this.sql(
				`INSERT INTO notifications (id, user_id, event_id, type, order_id, channel, subject, body, status, attempts, locked_until, created_at)
				 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
				 ON CONFLICT (event_id) DO NOTHING`,
				[row.id, row.userId, row.eventId, row.type, row.orderId, row.channel, row.subject, row.body, row.status, row.attempts, row.lockedUntil, row.createdAt],
			);
			return count === 1 ? row : null;
		},

		/** Takes a pending notification whose owner's time is up (a crashed delivery): one conditional update. */
		async claim(this: NotificationsThis, eventId: string): Promise<boolean> {
			const now = new Date();
			const [taken] = await this.model.update(
				{ lockedUntil: new Date(now.getTime() + this.settings.claimTtlMs), attempts: this.sequelize.literal("attempts + 1") },
				{ where: { eventId, status: "pending", [Op.or]: [{ lockedUntil: null }, { lockedUntil: { [Op.lt]: now } }] } },
			);
			return taken === 1;
		},

		/**
		 * The event was recorded before. Sent or failed: done, nothing is sent. Pending and free (its
		 * delivery crashed or gave up): take it and send it again. Pending and owned: wait for the
		 * owner, at most for its time, then take it.
		 *
		 * While the owner's time runs, a waiter only reads: a claim is a write, and on SQLite the
		 * waiters' claims every claimPollMs kept the one write lock busy, so that the owner's own
		 * settle waited in SQLite's busy back-offs past the waiters' deadline (notifications.spec,
		 * 20 concurrent deliveries: 1 run in 6 to 8 failed on the seventh session's machine).
		 */
		async awaitOrTakeOver(this: NotificationsThis, draft: NotificationDraft, ctx?: Context): Promise<Notification> {
			const deadline = Date.now() + this.settings.claimTtlMs + this.settings.claimPollMs;
			for (;;) {
				const row = await this.findByEvent(draft.eventId);
				if (row && row.status !== "pending") return this.toNotification(row);
				const owned = row?.lockedUntil != null && new Date(row.lockedUntil).getTime() >= Date.now();
				if (!owned && (await this.claim(draft.eventId))) {
					const claimed = await this.findByEvent(draft.eventId);
					if (claimed) return this.deliver(claimed, draft, ctx);
				}
				if (Date.now() >= deadline)
					throw new EventDeferredError(`The notification of event ${draft.eventId} is still being sent`, { eventId: draft.eventId });
				await sleep(this.settings.claimPollMs);
			}
		},

		/**
		 * Sends a notification this delivery owns and records the outcome. A permanent refusal is
		 * recorded as failed and not retried; anything else frees the notification and asks for the
		 * event again (EventDeferredError).
		 */
		async deliver(this: NotificationsThis, row: NotificationRow, draft: NotificationDraft, ctx?: Context): Promise<Notification> {
			let channel: NotificationChannel = (row.channel === "email" && this.deliveryChannels.email) || this.deliveryChannels.log;
			try {
				const to = await this.recipientOf(row, draft, channel, ctx);
				// An address nobody knows (the user is gone): the log is the only channel left.
				if (channel.name === "email" && !to.email) channel = this.deliveryChannels.log;
				await withTimeout(channel.send(to, row.subject, row.body), this.settings.sendTimeoutMs, `The ${channel.name} send`);
			} catch (err) {
				if (isPermanentSendError(err)) {
					this.logger.warn(`Notification ${row.id} (event ${row.eventId}) failed for good on ${channel.name}: ${reason(err)}`);
					return this.settle(row, { status: "failed", channel: channel.name, lastError: reason(err) });
				}
				this.logger.warn(`Notification ${row.id} (event ${row.eventId}) not sent yet, the event will be retried: ${reason(err)}`);
				// Free it at once, so the retry need not wait for the claim to expire.
				await this.model
					.update({ lockedUntil: null, lastError: reason(err) }, { where: { id: row.id, status: "pending" } })
					.catch(() => undefined);
				throw new EventDeferredError(`The notification of event ${row.eventId} could not be sent yet: ${reason(err)}`, {
					eventId: row.eventId,
				});
			}
			return this.settle(row, { status: "sent", channel: channel.name, lastError: null, sentAt: new Date() });
		},

		/** Who gets it: the event's own address, or for order events users.contact when it goes by email. */
		async recipientOf(this: NotificationsThis, row: NotificationRow, draft: NotificationDraft, channel: NotificationChannel, ctx?: Context): Promise<Recipient> {
			if (draft.email || channel.name !== "email") return { userId: row.userId, email: draft.email };
			try {
				const contact = await (ctx ?? this.broker).call<{ email: string }, { id: number }>("users.contact", { id: row.userId });
				return { userId: row.userId, email: contact.email };
			} catch (err) {
				// A deleted user has no address; any other failure (users unreachable, which Moleculer
				// also answers with a 404, SERVICE_NOT_FOUND) is transient.
				if ((err as { type?: string }).type === "NOT_FOUND") return { userId: row.userId };
				throw err;
			}
		},

		async settle(
			this: NotificationsThis,
			row: NotificationRow,
			changes: Pick<NotificationRow, "status" | "channel" | "lastError"> & { sentAt?: Date },
		): Promise<Notification> {
			const values = { ...changes, lockedUntil: null, sentAt: changes.sentAt ?? null };
			// Guarded by the status it had: a delivery that took it over and settled it first wins.
			const { count } = await this.sql(
				"UPDATE notifications SET status = $2, channel = $3, last_error = $4, sent_at = $5, locked_until = NULL WHERE id = $1 AND status = 'pending'",
				[row.id, values.status, values.channel, values.lastError, values.sentAt],
			);
			if (count === 1) {
				const notification = this.toNotification({ ...row, ...values });
				// Every gateway node pushes it to the user's open streams (GET /api/notifications/stream).
				// A signal, not a delivery: a page that missed it reads the list when it reconnects.
				this.broker.broadcast(NOTIFICATION_STORED, notification);
				return notification;
			}
			// Another delivery took it over meanwhile and settled it first: its outcome stands.
			const current = await this.findByEvent(row.eventId);
			return this.toNotification(current ?? { ...row, ...values });
		},

		async findByEvent(this: NotificationsThis, eventId: string): Promise<NotificationRow | null> {
			const row = await this.model.findOne({ where: { eventId } });
			return row ? (row.get({ plain: true }) as NotificationRow) : null;
		},

		/** Only what went out (or failed for good): a pending notification is not one yet (API.md's status is sent | failed). */
		async listNotifications(this: NotificationsThis, userId: number, { page, pageSize }: ListParams): Promise<ListResult<Notification>> {
			const from = "notifications WHERE user_id = $1 AND status IN ('sent', 'failed')";
			return this.pageOf({ columns: NOTIFICATION_COLUMNS, from, order: "created_at DESC, id DESC", values: [userId] }, page, pageSize, (r: NotificationRow) => this.toNotification(r));
		},

		toNotification(row: Model | NotificationRow): Notification {
			const r = plainRow<NotificationRow>(row);
			return {
				id: r.id,
				userId: r.userId,
				eventId: r.eventId,
				type: r.type,
				orderId: r.orderId ?? null,
				channel: r.channel,
				subject: r.subject,
				body: r.body,
				status: r.status,
				createdAt: new Date(r.createdAt).toISOString(),
				sentAt: r.sentAt ? new Date(r.sentAt).toISOString() : null,
			};
		},
	},

	created: lifecycle<NotificationsThis>(function () {
		const { smtpUrl, smtpFrom, sendTimeoutMs, claimTtlMs } = this.settings;
		if (sendTimeoutMs >= claimTtlMs)
			this.logger.warn(`sendTimeoutMs (${sendTimeoutMs}) should be well below claimTtlMs (${claimTtlMs}): a slow send may be taken over and sent twice`);
		this.deliveryChannels = {
			log: new LogChannel(this.logger),
			email: smtpUrl ? new EmailChannel({ url: smtpUrl, from: smtpFrom, timeoutMs: sendTimeoutMs }) : undefined,
		};
		const validator = this.broker.validator;
		if (!validator) throw new Error("The notifications service checks its events with the broker's validator: enable it");
		this.eventChecks = Object.fromEntries(
			BUSINESS_EVENTS.map(type => [type, validator.compile(EVENT_RULES[type]) as EventCheck]),
		) as Record<BusinessEventName, EventCheck>;
	}),

	started: lifecycle<NotificationsThis>(function () {
		const { smtpUrl } = this.settings;
		this.logger.info(smtpUrl ? `Notifications go out by email through ${maskUrl(smtpUrl)}` : "Notifications go to the log (SMTP_URL is unset)");
	}),

	stopped: lifecycle<NotificationsThis>(async function () {
		await this.deliveryChannels?.email?.close?.();
	}),
};

export default NotificationsService;
