/**
 * The cache-aside mixin on the Memory cacher: hits and misses, one fill per hot miss, and no stale
 * entry surviving a write, even when a fill read the old row before the write committed.
 */
import { ServiceBroker, type Context } from "moleculer";
import { CacheMixin, type CacheMeta, type CacheMethods } from "../../mixins/cache.mixin";

interface Row {
	id: number;
	value: string;
}

let broker: ServiceBroker;
const db = new Map<number, Row>();
let loads = 0;
/** A gate a test can hold closed to keep a fill between its database read and its cache write. */
let gate: Promise<void> = Promise.resolve();

beforeEach(async () => {
	db.clear();
	loads = 0;
	gate = Promise.resolve();
	broker = new ServiceBroker({ logger: false, cacher: "Memory" });
	broker.createService({
		name: "things",
		mixins: [CacheMixin],
		settings: { cacheTtlSeconds: 60 },
		actions: {
			get: {
				params: { id: "number" },
				handler(this: CacheMethods, ctx: Context<{ id: number }, CacheMeta>) {
					return this.cachedEntity(ctx, ctx.params.id, async () => {
						loads++;
						const row = db.get(ctx.params.id);
						const copy = row ? { ...row } : null;
						await gate;
						return copy;
					});
				},
			},
			list: {
				handler(this: CacheMethods, ctx: Context<unknown, CacheMeta>) {
					return this.cachedList(ctx, { all: true }, async () => {
						loads++;
						const rows = [...db.values()].map(r => ({ ...r }));
						await gate;
						return rows;
					});
				},
			},
			set: {
				async handler(this: CacheMethods, ctx: Context<Row>) {
					db.set(ctx.params.id, { ...ctx.params });
					await this.invalidateEntities([ctx.params.id]);
					return ctx.params;
				},
			},
		},
	});
	await broker.start();
});

afterEach(() => broker.stop());

async function call(action: string, params: unknown = {}) {
	const meta: { $cache?: string } = {};
	const result = await broker.call(`things.${action}`, params, { meta });
	return { result, cache: meta.$cache };
}

it("answers MISS from the database, then HIT from the cache", async () => {
	db.set(1, { id: 1, value: "a" });
	expect(await call("get", { id: 1 })).toEqual({ result: { id: 1, value: "a" }, cache: "MISS" });
	expect(await call("get", { id: 1 })).toEqual({ result: { id: 1, value: "a" }, cache: "HIT" });
	expect(loads).toBe(1);
});

it("does not cache an absent row", async () => {
	await call("get", { id: 404 });
	db.set(404, { id: 404, value: "now" });
	expect((await call("get", { id: 404 })).result).toEqual({ id: 404, value: "now" });
});

it("fills a hot key once for 50 concurrent misses", async () => {
	db.set(1, { id: 1, value: "a" });
	let open!: () => void;
	gate = new Promise(r => (open = r));
	const calls = Array.from({ length: 50 }, () => call("get", { id: 1 }));
	await new Promise(r => setTimeout(r, 20));
	open();
	const results = await Promise.all(calls);
	expect(loads).toBe(1);
	expect(results.filter(r => r.cache === "MISS")).toHaveLength(1);
	expect(results.every(r => (r.result as Row).value === "a")).toBe(true);
});

it("never keeps a fill that read the row before a write committed", async () => {
	db.set(1, { id: 1, value: "old" });
	let open!: () => void;
	gate = new Promise(r => (open = r));
	// The fill reads "old" and then waits before writing the cache…
	const slowRead = call("get", { id: 1 });
	await new Promise(r => setTimeout(r, 10));
	// …while a write commits "new" and invalidates: it must wait for the fill, then delete it.
	const write = call("set", { id: 1, value: "new" });
	await new Promise(r => setTimeout(r, 10));
	open();
	await Promise.all([slowRead, write]);
	expect((await call("get", { id: 1 })).result).toEqual({ id: 1, value: "new" });
});

it("stores nothing from a fill during which the cacher went down or came back", async () => {
	db.set(1, { id: 1, value: "old" });
	const cacher = broker.cacher as unknown as { epoch?: number };
	cacher.epoch = 0;
	let open!: () => void;
	gate = new Promise(r => (open = r));
	// The fill reads "old"; meanwhile Redis goes away and comes back (lib/redis-cacher's epoch
	// moves on twice), and a write commits "new" whose delete the outage skipped.
	const slowRead = call("get", { id: 1 });
	await new Promise(r => setTimeout(r, 10));
	db.set(1, { id: 1, value: "new" });
	cacher.epoch += 2;
	open();
	expect((await slowRead).result).toEqual({ id: 1, value: "old" });
	expect(await call("get", { id: 1 })).toEqual({ result: { id: 1, value: "new" }, cache: "MISS" });
});

it("never keeps a list filled before a write committed", async () => {
	db.set(1, { id: 1, value: "old" });
	let open!: () => void;
	gate = new Promise(r => (open = r));
	const slowList = call("list");
	await new Promise(r => setTimeout(r, 10));
	await call("set", { id: 1, value: "new" });
	open();
	await slowList;
	expect((await call("list")).result).toEqual([{ id: 1, value: "new" }]);
});

it("serves lists from the cache until a write retires them", async () => {
	db.set(1, { id: 1, value: "a" });
	expect((await call("list")).cache).toBe("MISS");
	expect((await call("list")).cache).toBe("HIT");
	await call("set", { id: 2, value: "b" });
	const after = await call("list");
	expect(after.cache).toBe("MISS");
	expect(after.result).toHaveLength(2);
});

it("with no cacher (CACHER=off) reads the database every time and answers MISS", async () => {
	const uncached = new ServiceBroker({ logger: false });
	let reads = 0;
	const rows = new Map<number, Row>([[1, { id: 1, value: "a" }]]);
	uncached.createService({
		name: "things",
		mixins: [CacheMixin],
		actions: {
			get: {
				handler(this: CacheMethods, ctx: Context<{ id: number }, CacheMeta>) {
					return this.cachedEntity(ctx, ctx.params.id, async () => (reads++, { ...rows.get(ctx.params.id)! }));
				},
			},
			list: {
				handler(this: CacheMethods, ctx: Context<unknown, CacheMeta>) {
					return this.cachedList(ctx, { all: true }, async () => (reads++, [...rows.values()]));
				},
			},
			set: {
				async handler(this: CacheMethods, ctx: Context<Row>) {
					rows.set(ctx.params.id, { ...ctx.params });
					await this.invalidateEntities([ctx.params.id]);
				},
			},
		},
	});
	await uncached.start();
	try {
		const get = async () => {
			const meta: { $cache?: string } = {};
			const result = await uncached.call("things.get", { id: 1 }, { meta });
			return { result, cache: meta.$cache };
		};
		expect(await get()).toEqual({ result: { id: 1, value: "a" }, cache: "MISS" });
		await uncached.call("things.set", { id: 1, value: "b" });
		expect(await get()).toEqual({ result: { id: 1, value: "b" }, cache: "MISS" });
		const meta: { $cache?: string } = {};
		expect(await uncached.call("things.list", {}, { meta })).toEqual([{ id: 1, value: "b" }]);
		expect(meta.$cache).toBe("MISS");
		expect(reads).toBe(3);
	} finally {
		await uncached.stop();
	}
});
