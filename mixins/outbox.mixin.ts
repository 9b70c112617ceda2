/**
 * Transactional outbox: a business event is written in the same database transaction as the
 * change it announces, and a relay publishes pending events through the durable channels
 * (lib/channels) and marks them sent only after the broker confirmed them. A crash at any point
 * between the commit and the confirmation leaves the row pending, and the relay publishes it again
 * after restart: at least once from outbox to queue; consumers are idempotent by eventId.
 */
import { DataTypes, QueryTypes, type Transaction } from "sequelize";
import type { Context, ServiceBroker, ServiceSchema, Span } from "moleculer";
import type { BusinessEventName, BusinessEvents } from "../lib/events";
import { lifecycle } from "../lib/service";
import { METRICS, setMetric } from "../lib/metrics";
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

/**
 * The span that wrote an event: the relay's publish span is its child, so the event's consumers
 * join the trace of the request that wrote it. Set only for sampled traces.
 */
export function outboxTraceMigration(name: string): Migration {
	return {
		name,
		async up(qi) {
			await qi.addColumn("outbox", "parent_span_id", { type: DataTypes.STRING(64), allowNull: true });
		},
		async down(qi) {
			await qi.removeColumn("outbox", "parent_span_id");
		},
	};
}

export interface OutboxSettings {
	/** Milliseconds between looks for pending events (the relay is also woken after each commit). */
	outboxPollMs: number;
	/** Events published per round, concurrently. */
	outboxBatch: number;
	/** Milliseconds between updates of the backlog gauges (carsi.outbox.backlog, .oldest.age). */
	outboxMetricsMs?: number;
}

export interface OutboxMethods {
	/**
	 * Writes the event into the outbox within the caller's transaction, with the caller's
	 * requestID (the trace id) and, when the trace is sampled, its span id.
	 */
	addToOutbox<E extends BusinessEventName>(t: Transaction, event: E, payload: BusinessEvents[E], ctx?: Context): Promise<void>;
	/**
	 * A change (one INSERT, UPDATE or DELETE, `$1`… placeholders) and its event, committed together.
	 * On PostgreSQL one statement: the change as a data-modifying WITH, the outbox row as the main
	 * INSERT. A single statement is atomic, so no BEGIN and COMMIT round trips. Elsewhere, the two
	 * statements in one transaction. The change's errors (a unique violation…) come back as they are.
	 */
	writeWithEvent<E extends BusinessEventName>(change: { text: string; params: unknown[] }, event: E, payload: BusinessEvents[E], ctx?: Context): Promise<void>;
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
	parent_span_id: string | null;
}

/** The outbox row's INSERT, its placeholders numbered from `first`. */
function outboxInsert(first: number): string {
	const [id, event, payload, requestId, parentSpanId, now] = [0, 1, 2, 3, 4, 5].map(i => `$${first + i}`);
	return `INSERT INTO outbox (event_id, event, payload, request_id, parent_span_id, created_at, attempts) VALUES (${id}, ${event}, ${payload}, ${requestId}, ${parentSpanId}, ${now}, 0)`;
}

/** The row's values, with the writer's requestID (the trace id) and, for a sampled trace, its span id. */
function outboxParams(event: string, payload: { eventId: string }, ctx?: Context): unknown[] {
	const parentSpanId = ctx?.tracing ? ((ctx as Context & { span?: Span }).span?.id ?? ctx.id) : null;
	return [payload.eventId, event, JSON.stringify(payload), ctx?.requestID ?? null, parentSpanId, new Date()];
}

type SendToChannel = (name: string, payload: unknown, opts: Record<string, unknown>) => Promise<unknown>;

interface OutboxThis extends DbMethods, OutboxMethods {
	name: string;
	settings: OutboxSettings;
	broker: ServiceBroker & { sendToChannel?: SendToChannel };
	logger: { warn(...a: unknown[]): void; info(...a: unknown[]): void; debug(...a: unknown[]): void };
	outbox: { timer?: NodeJS.Timeout; metricsTimer?: NodeJS.Timeout; running?: Promise<number>; again: boolean; stopping: boolean; warned: boolean };
}

export const OutboxMixin: Partial<ServiceSchema> = {
	settings: { outboxPollMs: 1000, outboxBatch: 100, outboxMetricsMs: 5000 },

	methods: {
		async addToOutbox(this: OutboxThis, t: Transaction, event: string, payload: { eventId: string }, ctx?: Context) {
			await this.sql(outboxInsert(1), outboxParams(event, payload, ctx), t);
		},

		async writeWithEvent(this: OutboxThis, change: { text: string; params: unknown[] }, event: string, payload: { eventId: string }, ctx?: Context) {
			if (this.dbDialect() === "postgres") {
				await this.sql(`WITH written AS (${change.text}) ${outboxInsert(change.params.length + 1)}`, [...change.params, ...outboxParams(event, payload, ctx)]);
				return;
			}
			await this.transaction(async t => {
				await this.sql(change.text, change.params, t);
				await this.addToOutbox(t, event as BusinessEventName, payload as never, ctx);
			});
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
			const select = `SELECT event_id, event, payload, request_id, parent_span_id FROM outbox WHERE sent_at IS NULL ORDER BY created_at LIMIT $1${
				// Several nodes of one service relay together: each takes rows no other holds.
				pg ? " FOR UPDATE SKIP LOCKED" : ""
			}`;
			const publishBatch = async (t?: Transaction) => {
				const { rows } = await this.sql<PendingRow>(select, [this.settings.outboxBatch], t);
				if (rows.length === 0) return 0;
				// Concurrently: confirms arrive in parallel (one by one, RabbitMQ confirms ~15x fewer).
				const results = await Promise.allSettled(rows.map(row => publishRow(this, send, row)));
				const sent = rows.filter((_, i) => results[i].status === "fulfilled").map(r => r.event_id);
				const failed = rows.flatMap((row, i) => {
					const r = results[i];
					return r.status === "rejected" ? [{ id: row.event_id, error: String((r.reason as Error)?.message ?? r.reason) }] : [];
				});
				// One statement for the batch: $2… are its ids.
				if (sent.length > 0)
					await this.sql(
						`UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE event_id IN (${sent.map((_, i) => `$${i + 2}`).join(", ")})`,
						[new Date(), ...sent],
						t,
					);
				for (const f of failed)
					await this.sql("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE event_id = $1", [f.id, f.error.slice(0, 1000)], t);
				if (failed.length > 0) this.logger.warn(`${failed.length} outbox event(s) not confirmed, kept for the next round: ${failed[0].error}`);
				return sent.length;
			};
			// PostgreSQL holds the row locks while publishing; SQLite has one relay per process (the
			// `running` guard) and must not hold its single write lock while handlers run.
			return pg ? this.transaction(t => publishBatch(t)) : publishBatch();
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
		this.outbox.metricsTimer = setInterval(() => void reportBacklog(this), this.settings.outboxMetricsMs ?? 5000);
		this.outbox.metricsTimer.unref();
		// Events left pending by a crash go out now, not after the first poll.
		this.kickRelay();
	}),

	stopped: lifecycle<OutboxThis>(async function () {
		this.outbox.stopping = true;
		if (this.outbox.timer) clearInterval(this.outbox.timer);
		if (this.outbox.metricsTimer) clearInterval(this.outbox.metricsTimer);
		await this.outbox.running;
	}),
};

/** The backlog gauges of this service; a database that does not answer leaves them as they were. */
async function reportBacklog(svc: OutboxThis): Promise<void> {
	if (!svc.sequelize || svc.outbox.stopping) return;
	try {
		const { pending, oldestAgeMs } = await svc.outboxBacklog();
		setMetric(svc.broker, METRICS.outboxBacklog, pending, { service: svc.name });
		setMetric(svc.broker, METRICS.outboxOldestAge, (oldestAgeMs ?? 0) / 1000, { service: svc.name });
	} catch (err) {
		svc.logger.debug(`Outbox backlog not measured: ${(err as Error).message}`);
	}
}

/**
 * Publishes one row. With a sampled trace, inside a span that is a child of the span that wrote
 * the row; the message's headers ($requestID, $parentID, $tracing: what @moleculer/channels puts
 * there from a Context) make the consumers' spans children of this one.
 */
async function publishRow(svc: OutboxThis, send: SendToChannel, row: PendingRow): Promise<unknown> {
	const broker = svc.broker;
	const traced = row.request_id && row.parent_span_id && broker.isTracingEnabled();
	const span = traced
		? broker.tracer.startSpan(`outbox publish '${row.event}'`, {
				type: "outbox",
				traceID: row.request_id,
				parentID: row.parent_span_id,
				service: svc as never,
				sampled: true,
				tags: { eventId: row.event_id, nodeID: broker.nodeID },
			})
		: undefined;
	const headers: Record<string, string> = {};
	if (row.request_id) {
		headers.$requestID = row.request_id;
		headers.$tracing = String(!!span);
		if (span) headers.$parentID = span.id;
	}
	try {
		const result = await send.call(broker, row.event, JSON.parse(row.payload), {
			messageId: row.event_id,
			persistent: true,
			headers: row.request_id ? headers : undefined,
		});
		span?.finish();
		return result;
	} catch (err) {
		span?.setError(err as Error).finish();
		throw err;
	}
}

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
