/**
 * Transactional outbox: a business event is written in the same database transaction as the
 * change it announces, and published through the durable channels (lib/channels), its row marked
 * sent only after the broker confirmed it. Two paths publish:
 * - the hand-off: once the transaction has committed, the node that wrote the event publishes it
 *   from memory, in batches of what committed meanwhile, and marks the batch sent in one UPDATE
 *   (a publish and a statement after the commit: no reading back of what it just wrote);
 * - the poll: every outboxPollMs the relay takes pending rows that are no longer any hand-off's
 *   (written before this node started, or more than outboxHandoffMs ago: their writer crashed, or
 *   its publish failed) and publishes them in a transaction that holds their rows.
 * A crash at any point between the commit and the confirmation leaves the row pending, and the poll
 * publishes it (after a restart at once): at least once from outbox to queue; consumers are
 * idempotent by eventId. A hand-off slower than outboxHandoffMs can meet the poll on the same row:
 * the event goes out twice with the same eventId.
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
	/** Milliseconds between looks for pending events no hand-off holds. */
	outboxPollMs: number;
	/** Events published per round, concurrently. */
	outboxBatch: number;
	/** Milliseconds after its commit an event is left to its writer's hand-off before the poll takes it (5000). */
	outboxHandoffMs?: number;
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
	/** Asks the poll to run soon. */
	kickRelay(): void;
	/** One poll round: publishes up to a batch of pending events no hand-off holds; answers how many were confirmed. */
	relayOnce(): Promise<number>;
	/** Publishes an event that has just committed (the hand-off); its row stays pending for the poll if that fails. */
	handOff(row: OutboxEvent): void;
	/** Pending events and the age of the oldest, for /ready and metrics. */
	outboxBacklog(): Promise<{ pending: number; oldestAgeMs: number | null }>;
}

/** An event to publish: a pending row as read (payload as text), or as just written (the object). */
export interface OutboxEvent {
	event_id: string;
	event: string;
	payload: string | object;
	request_id: string | null;
	parent_span_id: string | null;
}

/** The outbox row's INSERT, its placeholders numbered from `first`. */
function outboxInsert(first: number): string {
	const [id, event, payload, requestId, parentSpanId, now] = [0, 1, 2, 3, 4, 5].map(i => `$${first + i}`);
	return `INSERT INTO outbox (event_id, event, payload, request_id, parent_span_id, created_at, attempts) VALUES (${id}, ${event}, ${payload}, ${requestId}, ${parentSpanId}, ${now}, 0)`;
}

/** The event as written, with the writer's requestID (the trace id) and, for a sampled trace, its span id. */
function outboxEvent(event: string, payload: { eventId: string }, ctx?: Context): OutboxEvent {
	const parentSpanId = ctx?.tracing ? ((ctx as Context & { span?: Span }).span?.id ?? ctx.id) : null;
	return { event_id: payload.eventId, event, payload, request_id: ctx?.requestID ?? null, parent_span_id: parentSpanId };
}

/** The INSERT's values of an event. */
function outboxParams(row: OutboxEvent): unknown[] {
	return [row.event_id, row.event, JSON.stringify(row.payload), row.request_id, row.parent_span_id, new Date()];
}

type SendToChannel = (name: string, payload: unknown, opts: Record<string, unknown>) => Promise<unknown>;

interface OutboxThis extends DbMethods, OutboxMethods {
	name: string;
	settings: OutboxSettings;
	broker: ServiceBroker & { sendToChannel?: SendToChannel };
	logger: { warn(...a: unknown[]): void; info(...a: unknown[]): void; debug(...a: unknown[]): void };
	outbox: {
		timer?: NodeJS.Timeout;
		metricsTimer?: NodeJS.Timeout;
		/** The poll's rounds, while they run. */
		running?: Promise<number>;
		again: boolean;
		/** Committed events waiting for the hand-off. */
		handed: OutboxEvent[];
		/** The hand-off's lanes running (see HANDOFF_LANES; each leaves as it finds nothing waiting), their promises, and whether one is about to start. */
		laneCount: number;
		lanes: Set<Promise<void>>;
		laneStarting: boolean;
		/** Rows written before this instant are no hand-off's of this node. */
		startedAt: Date;
		stopping: boolean;
		warned: boolean;
	};
}

/** Events waiting for the hand-off beyond this many batches are left to the poll. */
const HANDOFF_BATCHES = 10;

/**
 * Batches the hand-off keeps out at once, each lane taking what waits when its batch is done. One
 * at a time, every event waited for the batch before its own: in one process, where a publish is
 * the delivery, for that batch's slowest consumer (twelfth session: at 280 orders/s on one process
 * on PostgreSQL, lag p99 159-358 ms with one lane, 79-100 with four); on RabbitMQ for the broker's
 * confirm of the batch and its mark (thirteenth session: the cluster's lag p99 313 → 250 ms closed
 * loop and 250 → 202 ms at a sustained rate, means of six passes, orders/s alike). Under load the
 * lanes are busy and what waits gathers into their next batches (up to outboxBatch each): RabbitMQ
 * confirms a batch in flight many times faster than one publish after another.
 */
export const HANDOFF_LANES = 4;

export const OutboxMixin: Partial<ServiceSchema> = {
	settings: { outboxPollMs: 1000, outboxBatch: 100, outboxHandoffMs: 5000, outboxMetricsMs: 5000 },

	methods: {
		async addToOutbox(this: OutboxThis, t: Transaction, event: string, payload: { eventId: string }, ctx?: Context) {
			const row = outboxEvent(event, payload, ctx);
			await this.sql(outboxInsert(1), outboxParams(row), t);
			t.afterCommit(() => this.handOff(row));
		},

		async writeWithEvent(this: OutboxThis, change: { text: string; params: unknown[] }, event: string, payload: { eventId: string }, ctx?: Context) {
			if (this.dbDialect() === "postgres") {
				const row = outboxEvent(event, payload, ctx);
				await this.sql(`WITH written AS (${change.text}) ${outboxInsert(change.params.length + 1)}`, [...change.params, ...outboxParams(row)]);
				this.handOff(row);
				return;
			}
			await this.transaction(async t => {
				await this.sql(change.text, change.params, t);
				await this.addToOutbox(t, event as BusinessEventName, payload as never, ctx);
			});
		},

		handOff(this: OutboxThis, row: OutboxEvent) {
			const { outbox } = this;
			// Stopping, or too far behind (the broker is slow or away): the poll publishes it later.
			if (outbox.stopping || outbox.handed.length >= HANDOFF_BATCHES * this.settings.outboxBatch) return;
			outbox.handed.push(row);
			// What else commits in this turn of the event loop goes in the same batch: a lane starts on
			// the next turn, if one is free; a busy lane takes what waits when its batch is done.
			if (outbox.laneStarting || outbox.laneCount >= HANDOFF_LANES) return;
			outbox.laneStarting = true;
			setImmediate(() => {
				outbox.laneStarting = false;
				if (outbox.laneCount >= HANDOFF_LANES) return;
				outbox.laneCount++;
				const lane: Promise<void> = flushHandOffs(this).finally(() => outbox.lanes.delete(lane));
				outbox.lanes.add(lane);
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
			const send = channelSend(this);
			if (!send) return 0;
			const pg = this.dbDialect() === "postgres";
			const select = `SELECT event_id, event, payload, request_id, parent_span_id FROM outbox WHERE sent_at IS NULL AND created_at < $2 ORDER BY created_at LIMIT $1${
				// Several nodes of one service relay together: each takes rows no other holds.
				pg ? " FOR UPDATE SKIP LOCKED" : ""
			}`;
			// No hand-off of this node holds a row written before it started; another node's holds it
			// for outboxHandoffMs at most.
			const handedSince = Math.max(this.outbox.startedAt.getTime(), Date.now() - (this.settings.outboxHandoffMs ?? 5000));
			const publishBatch = async (t?: Transaction) => {
				const { rows } = await this.sql<OutboxEvent>(select, [this.settings.outboxBatch, new Date(handedSince)], t);
				return rows.length === 0 ? 0 : publishAndMark(this, send, rows, t);
			};
			// PostgreSQL holds the row locks while publishing; SQLite has one poll per process (the
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
		this.outbox = { again: false, handed: [], laneCount: 0, lanes: new Set(), laneStarting: false, startedAt: new Date(), stopping: false, warned: false };
	}),

	started: lifecycle<OutboxThis>(function () {
		this.outbox.startedAt = new Date();
		this.outbox.timer = setInterval(() => this.kickRelay(), this.settings.outboxPollMs);
		this.outbox.timer.unref();
		this.outbox.metricsTimer = setInterval(() => void reportBacklog(this), this.settings.outboxMetricsMs ?? 5000);
		this.outbox.metricsTimer.unref();
		// Events left pending by a crash go out as soon as the database is there, not after the first
		// poll. Moleculer runs the mixins' started hooks in series, this one before DbMixin's.
		const firstPoll = () => {
			if (this.outbox.stopping) return;
			if (this.sequelize) this.kickRelay();
			else setTimeout(firstPoll, 20).unref();
		};
		firstPoll();
	}),

	stopped: lifecycle<OutboxThis>(async function () {
		this.outbox.stopping = true;
		if (this.outbox.timer) clearInterval(this.outbox.timer);
		if (this.outbox.metricsTimer) clearInterval(this.outbox.metricsTimer);
		// The batches being published finish; what waits behind them is left to the next poll.
		await Promise.all([this.outbox.running, ...this.outbox.lanes]);
		this.outbox.handed = [];
	}),
};

/** The channels' send, or undefined (once warned) when no channels middleware is loaded: events stay pending. */
function channelSend(svc: OutboxThis): SendToChannel | undefined {
	const send = svc.broker.sendToChannel;
	if (!send && !svc.outbox.warned) svc.logger.warn("No channels middleware: outbox events stay pending");
	svc.outbox.warned ||= !send;
	return send;
}

/**
 * Publishes the events concurrently (confirms arrive in parallel; one by one, RabbitMQ confirms
 * ~15× fewer), then marks the confirmed ones sent in one statement and counts an attempt with its
 * error on the others, which stay pending. Answers how many were confirmed.
 */
async function publishAndMark(svc: OutboxThis, send: SendToChannel, rows: OutboxEvent[], t?: Transaction): Promise<number> {
	const results = await Promise.allSettled(rows.map(row => publishRow(svc, send, row)));
	const sent = rows.filter((_, i) => results[i].status === "fulfilled").map(r => r.event_id);
	const failed = rows.flatMap((row, i) => {
		const r = results[i];
		return r.status === "rejected" ? [{ id: row.event_id, error: String((r.reason as Error)?.message ?? r.reason) }] : [];
	});
	// One statement for the batch: on PostgreSQL one text whatever its size (prepared once, lib/sql),
	// on SQLite (no arrays) $2… are its ids.
	if (sent.length > 0) {
		const mark = "UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE event_id";
		if (svc.dbDialect() === "postgres") await svc.sql(`${mark} = ANY($2)`, [new Date(), sent], t);
		else await svc.sql(`${mark} IN (${sent.map((_, i) => `$${i + 2}`).join(", ")})`, [new Date(), ...sent], t);
	}
	for (const f of failed)
		await svc.sql("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE event_id = $1", [f.id, f.error.slice(0, 1000)], t);
	if (failed.length > 0) svc.logger.warn(`${failed.length} outbox event(s) not confirmed, kept for the next round: ${failed[0].error}`);
	return sent.length;
}

/**
 * One lane of the hand-off: its batches, one at a time, while events wait, each marked sent in a
 * statement of its own (no transaction: the rows are this node's, and a crash before the mark
 * publishes them again, as a crash before a poll's COMMIT does). A database that does not answer
 * leaves them pending. The lane leaves the count in the same turn as it finds nothing waiting, so
 * an event handed off after that starts a lane of its own.
 */
async function flushHandOffs(svc: OutboxThis): Promise<void> {
	const { outbox } = svc;
	try {
		const send = channelSend(svc);
		if (!send) outbox.handed = [];
		while (send && outbox.handed.length > 0 && !outbox.stopping) {
			const batch = outbox.handed.splice(0, svc.settings.outboxBatch);
			try {
				await publishAndMark(svc, send, batch);
			} catch (err) {
				svc.logger.warn(`Outbox hand-off of ${batch.length} event(s) not marked, left to the poll: ${(err as Error).message}`);
			}
		}
	} finally {
		outbox.laneCount--;
	}
}

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
async function publishRow(svc: OutboxThis, send: SendToChannel, row: OutboxEvent): Promise<unknown> {
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
		const result = await send.call(broker, row.event, typeof row.payload === "string" ? JSON.parse(row.payload) : row.payload, {
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
	// Before DbMixin's started hook has connected the database there is nothing to poll (see started).
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
