/**
 * Transactional outbox: a business event is written in the same database transaction as the
 * change it announces, and a relay publishes pending events through the durable channels
 * (lib/channels) and marks them sent only after the broker confirmed them. A crash at any point
 * between the commit and the confirmation leaves the row pending, and the relay publishes it again
 * after restart: at least once from outbox to queue; consumers are idempotent by eventId.
 */
import { DataTypes, QueryTypes, type Transaction } from "sequelize";
import type { ServiceSchema } from "moleculer";
import type { BusinessEventName, BusinessEvents } from "../lib/events";
import { lifecycle } from "../lib/service";
import type { DbMethods, Migration } from "./db.mixin";

/** The outbox table of a service; add it to the service's migrations under a name of its own. */
export function outboxMigration(name: string): Migration {
	return {
		name,
		async up(qi) {
			await qi.createTable("outbox", {
				event_id: { type: DataTypes.STRING(36), primaryKey: true },
				event: { type: DataTypes.STRING(64), allowNull: false },
				payload: { type: DataTypes.TEXT, allowNull: false },
				request_id: { type: DataTypes.STRING(64), allowNull: true },
				created_at: { type: DataTypes.DATE, allowNull: false },
				sent_at: { type: DataTypes.DATE, allowNull: true },
				attempts: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
				last_error: { type: DataTypes.TEXT, allowNull: true },
			});
			await qi.addIndex("outbox", ["sent_at", "created_at"], { name: "outbox_pending" });
		},
		async down(qi) {
			await qi.dropTable("outbox");
		},
	};
}

export interface OutboxSettings {
	/** Milliseconds between looks for pending events (the relay is also woken after each commit). */
	outboxPollMs: number;
	/** Events published per round, concurrently. */
	outboxBatch: number;
}

export interface OutboxMethods {
	/** Writes the event into the outbox within the caller's transaction. */
	addToOutbox<E extends BusinessEventName>(t: Transaction, event: E, payload: BusinessEvents[E], requestId?: string): Promise<void>;
	/** Asks the relay to run soon (after a commit). */
	kickRelay(): void;
	/** One round: publishes up to a batch of pending events; answers how many were confirmed. */
	relayOnce(): Promise<number>;
	/** Pending events and the age of the oldest, for /ready and metrics. */
	outboxBacklog(): Promise<{ pending: number; oldestAgeMs: number | null }>;
}

interface PendingRow {
	event_id: string;
	event: string;
	payload: string;
	request_id: string | null;
}

type SendToChannel = (name: string, payload: unknown, opts: Record<string, unknown>) => Promise<unknown>;

interface OutboxThis extends DbMethods, OutboxMethods {
	name: string;
	settings: OutboxSettings;
	broker: { sendToChannel?: SendToChannel };
	logger: { warn(...a: unknown[]): void; info(...a: unknown[]): void; debug(...a: unknown[]): void };
	outbox: { timer?: NodeJS.Timeout; running?: Promise<number>; again: boolean; stopping: boolean; warned: boolean };
}

export const OutboxMixin: Partial<ServiceSchema> = {
	settings: { outboxPollMs: 1000, outboxBatch: 100 },

	methods: {
		async addToOutbox(this: OutboxThis, t: Transaction, event: string, payload: { eventId: string }, requestId?: string) {
			await this.sequelize.query(
				"INSERT INTO outbox (event_id, event, payload, request_id, created_at, attempts) VALUES (:id, :event, :payload, :requestId, :now, 0)",
				{
					replacements: { id: payload.eventId, event, payload: JSON.stringify(payload), requestId: requestId ?? null, now: new Date() },
					transaction: t,
					type: QueryTypes.INSERT,
				},
			);
		},

		kickRelay(this: OutboxThis) {
			if (this.outbox.stopping) return;
			if (this.outbox.running) {
				this.outbox.again = true;
				return;
			}
			setImmediate(() => void runRelay(this));
		},

		async relayOnce(this: OutboxThis): Promise<number> {
			const send = this.broker.sendToChannel;
			if (!send) {
				if (!this.outbox.warned) this.logger.warn("No channels middleware: outbox events stay pending");
				this.outbox.warned = true;
				return 0;
			}
			const pg = this.dbDialect() === "postgres";
			const select = `SELECT event_id, event, payload, request_id FROM outbox WHERE sent_at IS NULL ORDER BY created_at LIMIT :limit${
				// Several nodes of one service relay together: each takes rows no other holds.
				pg ? " FOR UPDATE SKIP LOCKED" : ""
			}`;
			const publishBatch = async (t?: Transaction) => {
				const rows = (await this.sequelize.query(select, {
					replacements: { limit: this.settings.outboxBatch },
					type: QueryTypes.SELECT,
					transaction: t,
				})) as PendingRow[];
				if (rows.length === 0) return 0;
				// Concurrently: confirms arrive in parallel (one by one, RabbitMQ confirms ~15x fewer).
				const results = await Promise.allSettled(
					rows.map(row =>
						send.call(this.broker, row.event, JSON.parse(row.payload), {
							messageId: row.event_id,
							persistent: true,
							headers: row.request_id ? { $requestID: row.request_id } : undefined,
						}),
					),
				);
				const sent = rows.filter((_, i) => results[i].status === "fulfilled").map(r => r.event_id);
				const failed = rows.flatMap((row, i) => {
					const r = results[i];
					return r.status === "rejected" ? [{ id: row.event_id, error: String((r.reason as Error)?.message ?? r.reason) }] : [];
				});
				if (sent.length > 0)
					await this.sequelize.query("UPDATE outbox SET sent_at = :now, attempts = attempts + 1 WHERE event_id IN (:ids)", {
						replacements: { now: new Date(), ids: sent },
						transaction: t,
					});
				for (const f of failed)
					await this.sequelize.query("UPDATE outbox SET attempts = attempts + 1, last_error = :error WHERE event_id = :id", {
						replacements: { id: f.id, error: f.error.slice(0, 1000) },
						transaction: t,
					});
				if (failed.length > 0) this.logger.warn(`${failed.length} outbox event(s) not confirmed, kept for the next round: ${failed[0].error}`);
				return sent.length;
			};
			// PostgreSQL holds the row locks while publishing; SQLite has one relay per process (the
			// `running` guard) and must not hold its single write lock while handlers run.
			return pg ? this.sequelize.transaction(t => publishBatch(t)) : publishBatch();
		},

		async outboxBacklog(this: OutboxThis) {
			const [row] = (await this.sequelize.query("SELECT count(*) AS pending, min(created_at) AS oldest FROM outbox WHERE sent_at IS NULL", {
				type: QueryTypes.SELECT,
			})) as Array<{ pending: number | string; oldest: string | Date | null }>;
			return {
				pending: Number(row.pending),
				oldestAgeMs: row.oldest ? Date.now() - new Date(row.oldest).getTime() : null,
			};
		},
	},

	created: lifecycle<OutboxThis>(function () {
		this.outbox = { again: false, stopping: false, warned: false };
	}),

	started: lifecycle<OutboxThis>(function () {
		this.outbox.timer = setInterval(() => this.kickRelay(), this.settings.outboxPollMs);
		this.outbox.timer.unref();
		// Events left pending by a crash go out now, not after the first poll.
		this.kickRelay();
	}),

	stopped: lifecycle<OutboxThis>(async function () {
		this.outbox.stopping = true;
		if (this.outbox.timer) clearInterval(this.outbox.timer);
		await this.outbox.running;
	}),
};

/** Runs rounds while there is work: full batches, or a kick that came during a round. */
async function runRelay(svc: OutboxThis): Promise<void> {
	// Moleculer runs the mixins' started hooks together: wait for the database to be connected.
	if (svc.outbox.running || svc.outbox.stopping || !svc.sequelize) return;
	const loop = async () => {
		let total = 0;
		for (;;) {
			svc.outbox.again = false;
			let sent = 0;
			try {
				sent = await svc.relayOnce();
			} catch (err) {
				svc.logger.warn(`Outbox relay round failed: ${(err as Error).message}`);
				break;
			}
			total += sent;
			if (svc.outbox.stopping) break;
			if (sent < svc.settings.outboxBatch && !svc.outbox.again) break;
		}
		return total;
	};
	svc.outbox.running = loop().finally(() => (svc.outbox.running = undefined));
	await svc.outbox.running;
}
