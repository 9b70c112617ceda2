/**
 * The outbox's two paths (mixins/outbox.mixin.ts), the same cases on each dialect:
 * test/unit/outbox.spec.ts runs them on SQLite, test/integration/outbox-postgres.spec.ts on
 * PostgreSQL. A tiny service of its own writes entries with their events; the events go through
 * the in-process channel adapter to recording consumers.
 */
import { randomUUID } from "node:crypto";
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { DataTypes } from "sequelize";
import { DbMixin, type DbMethods, type Migration } from "../../mixins/db.mixin";
import { HANDOFF_LANES, OutboxMixin, outboxMigration, outboxTraceMigration, type OutboxMethods } from "../../mixins/outbox.mixin";
import { createNode } from "./broker";
import { Recorder, consumerService, type Delivery } from "./channels";
import { sleep, waitFor } from "./wait";

const EVENT = "user.registered";

const createEntries: Migration = {
	name: "0001-create-entries",
	async up(qi) {
		await qi.createTable("entries", { id: { type: DataTypes.STRING(36), primaryKey: true }, note: { type: DataTypes.STRING(100), allowNull: false } });
	},
	async down(qi) {
		await qi.dropTable("entries");
	},
};

interface OutboxRowState {
	sent_at: unknown;
	attempts: number;
	last_error: string | null;
}

type LedgerThis = DbMethods & OutboxMethods;

/** Entries written with their event: alone (writeWithEvent) or in a transaction (addToOutbox). */
function ledgerService(databaseUrl: string, settings: Record<string, unknown>): ServiceSchema {
	const insert = "INSERT INTO entries (id, note) VALUES ($1, $2)";
	return {
		name: "ledger",
		mixins: [
			DbMixin({
				model: { name: "entry", define: { id: { type: DataTypes.STRING(36), primaryKey: true }, note: { type: DataTypes.STRING(100) } }, options: { tableName: "entries", timestamps: false } },
				migrations: [createEntries, outboxMigration("0002-create-outbox"), outboxTraceMigration("0003-outbox-trace")],
			}),
			OutboxMixin,
		],
		settings: { databaseUrl, dbConnectAttempts: 1, outboxBatch: 100, ...settings },
		actions: {
			async write(this: LedgerThis, ctx: Context<{ note: string }>) {
				const id = randomUUID();
				await this.writeWithEvent({ text: insert, params: [id, ctx.params.note] }, EVENT, { eventId: id, note: ctx.params.note } as never, ctx);
				return id;
			},
			async writeInTransaction(this: LedgerThis, ctx: Context<{ note: string; fail?: boolean }>) {
				const id = randomUUID();
				await this.transaction(async t => {
					await this.sql(insert, [id, ctx.params.note], t);
					await this.addToOutbox(t, EVENT, { eventId: id, note: ctx.params.note } as never, ctx);
					if (ctx.params.fail) throw new Error("rolled back on purpose");
				});
				return id;
			},
			/** A pending row as another node (or a crashed one) left it, written `ageMs` ago. */
			async pendingRow(this: LedgerThis, ctx: Context<{ ageMs: number }>) {
				const id = randomUUID();
				await this.sql("INSERT INTO outbox (event_id, event, payload, created_at, attempts) VALUES ($1, $2, $3, $4, 0)", [
					id,
					EVENT,
					JSON.stringify({ eventId: id, note: "left" }),
					new Date(Date.now() - ctx.params.ageMs),
				]);
				return id;
			},
			async row(this: LedgerThis, ctx: Context<{ id: string }>): Promise<OutboxRowState | null> {
				const { rows } = await this.sql<OutboxRowState>("SELECT sent_at, attempts, last_error FROM outbox WHERE event_id = $1", [ctx.params.id]);
				return rows[0] ?? null;
			},
		},
	};
}

export function outboxCases(databaseUrl: () => string): void {
	const brokers: ServiceBroker[] = [];
	const recorder = new Recorder();
	const late = new Recorder();

	/** A node with the ledger and a consumer of group "rec"; `groups` are the event's declared groups. */
	async function node(settings: Record<string, unknown>, groups = ["rec"], behaviour?: (d: Delivery) => unknown): Promise<ServiceBroker> {
		const broker = createNode({ services: [], channels: { consumerGroups: { [EVENT]: groups }, subscribeWaitMs: 300 } });
		brokers.push(broker);
		broker.createService(ledgerService(databaseUrl(), settings));
		broker.createService(consumerService("rec", "rec", [EVENT], recorder, behaviour));
		await broker.start();
		return broker;
	}
	const row = (broker: ServiceBroker, id: string) => broker.call<OutboxRowState | null, { id: string }>("ledger.row", { id });
	// An event is marked sent after its publish settled, and in one process a publish settles when
	// the consumers have handled it: a consumer sees the event before its row is marked.
	const marked = (broker: ServiceBroker, id: string) =>
		waitFor(`event ${id} marked sent`, async () => Boolean((await row(broker, id))?.sent_at), 10_000);

	afterEach(async () => {
		for (const b of brokers.splice(0)) await b.stop().catch(() => undefined);
	});

	// No poll after the one at start, and none would take these rows: only the hand-off can.
	const handOffOnly = { outboxPollMs: 3_600_000, outboxHandoffMs: 3_600_000 };

	it("publishes an event written alone as soon as it committed, without a poll", async () => {
		const broker = await node(handOffOnly);
		const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => broker.call<string, { note: string }>("ledger.write", { note: `alone ${i}` })));
		await waitFor("30 deliveries", () => ids.every(id => recorder.of(id).length === 1), 10_000);
		for (const id of ids) await marked(broker, id);
	});

	it("hands off an event while an earlier batch still waits for its consumer", async () => {
		let release!: () => void;
		const held = new Promise<void>(resolve => (release = resolve));
		const broker = await node(handOffOnly, ["rec"], d => (d.payload.note === "slow" ? held : undefined));
		const slow = await broker.call<string, { note: string }>("ledger.write", { note: "slow" });
		await waitFor("the slow event's delivery", () => recorder.of(slow).length === 1, 10_000);
		try {
			// In one process the slow event's batch lasts until its consumer returns; the next goes meanwhile.
			const quick = await broker.call<string, { note: string }>("ledger.write", { note: "quick" });
			await marked(broker, quick);
			expect((await row(broker, slow))?.sent_at).toBeNull();
		} finally {
			release();
		}
		await marked(broker, slow);
	});

	it(`holds at most ${HANDOFF_LANES} batches at the consumers at once`, async () => {
		const gates: Array<() => void> = [];
		const broker = await node(handOffOnly, ["rec"], () => new Promise<void>(resolve => gates.push(resolve)));
		const write = (i: number) => broker.call<string, { note: string }>("ledger.write", { note: `held ${i}` });
		try {
			for (let i = 0; i < HANDOFF_LANES; i++) {
				const id = await write(i);
				await waitFor(`held event ${i} at the consumer`, () => recorder.of(id).length === 1, 10_000);
			}
			const next = await write(HANDOFF_LANES);
			await sleep(300);
			expect(recorder.of(next)).toEqual([]);
			gates[0]();
			await waitFor("the next event once a batch ended", () => recorder.of(next).length === 1, 10_000);
		} finally {
			for (const open of gates) open();
		}
	});

	it("publishes an event of a transaction once it committed, and none of a transaction rolled back", async () => {
		const broker = await node(handOffOnly);
		const id = await broker.call<string, { note: string }>("ledger.writeInTransaction", { note: "committed" });
		await expect(broker.call("ledger.writeInTransaction", { note: "rolled back", fail: true })).rejects.toThrow("rolled back on purpose");
		await waitFor("the committed event", () => recorder.of(id).length === 1, 10_000);
		await marked(broker, id);
		expect(recorder.all.filter(d => d.payload.note === "rolled back")).toEqual([]);
	});

	it("leaves a young pending row to its writer's hand-off, and publishes it once outboxHandoffMs has passed", async () => {
		const broker = await node({ outboxPollMs: 50, outboxHandoffMs: 1500 });
		// Before the call: the row's created_at is no earlier than this.
		const written = Date.now();
		const id = await broker.call<string, { ageMs: number }>("ledger.pendingRow", { ageMs: 0 });
		// Twenty polls and more, none of which may take it yet.
		await sleep(1000);
		expect(recorder.of(id)).toEqual([]);
		await waitFor("the poll to publish it", () => recorder.of(id).length === 1, 10_000);
		expect(Date.now() - written).toBeGreaterThanOrEqual(1500);
		await marked(broker, id);
	});

	it("publishes at start what was left pending before the node started, however young", async () => {
		const first = await node(handOffOnly);
		const id = await first.call<string, { ageMs: number }>("ledger.pendingRow", { ageMs: 0 });
		await first.stop();
		await node(handOffOnly);
		await waitFor("the start's poll to publish it", () => recorder.of(id).length === 1, 10_000);
	});

	it("leaves an event whose hand-off was not confirmed pending, with its error, for the poll", async () => {
		// Group "late" is declared but not there: the in-process publish waits 300 ms for it, then rejects.
		const broker = await node({ outboxPollMs: 50, outboxHandoffMs: 1000 }, ["rec", "late"]);
		const id = await broker.call<string, { note: string }>("ledger.write", { note: "for late" });
		await waitFor("the hand-off's failure", async () => ((await row(broker, id))?.attempts ?? 0) >= 1, 10_000);
		const failed = await row(broker, id);
		expect(failed?.sent_at).toBeNull();
		expect(failed?.last_error).toMatch(/late/);
		broker.createService(consumerService("late", "late", [EVENT], late));
		await broker.waitForServices("late");
		await waitFor("the poll to deliver it to late", () => late.of(id).length === 1, 15_000);
		await marked(broker, id);
	});
}
