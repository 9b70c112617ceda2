/**
 * Two products brokers (two ServiceBroker instances, as two nodes would be) on one PostgreSQL
 * database, each with its own SafeRedisCacher on the same Redis and prefix: a write through one
 * never leaves a stale read on the other (API.md: every cached copy, on every node, is gone
 * before the response).
 */
import type { ServiceBroker } from "moleculer";
import type Redis from "ioredis";
import { Client } from "pg";
import { SafeRedisCacher } from "../../lib/redis-cacher";
import { createNode, uniqueId } from "../support/broker";
import { TestDatabases, pgQuery, pgUrl } from "../support/pg";
import { cachePrefix, cachedValue, deleteKeysWithPrefix, redisClient } from "../support/redis";
import { SERVERS, requireServers } from "../support/servers";
import { TcpProxy } from "../support/tcp-proxy";
import { sleep, waitFor } from "../support/wait";

interface Product {
	id: number;
	sku: string;
	name: string;
	category: string;
	priceCents: number;
	stock: number;
}
type CacheMeta = { $cache?: "HIT" | "MISS" };

const namespace = uniqueId("two");
const prefix = cachePrefix(namespace);
const dbs = new TestDatabases(["products"] as const);
const cachers: SafeRedisCacher[] = [];
let a: ServiceBroker | undefined;
let b: ServiceBroker | undefined;
const extra: ServiceBroker[] = [];
const proxies: TcpProxy[] = [];
let redis: Redis | undefined;

function productsNode(redisUrl: string = SERVERS.redis): ServiceBroker {
	const cacher = new SafeRedisCacher({ url: redisUrl, ttl: 300, prefix: `carsi-${namespace}` });
	cachers.push(cacher);
	return createNode({ services: ["products"], namespace, databaseUrls: dbs.urls, cacher });
}

let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres", "redis");
	serversUp = true;
	await dbs.create();
	a = productsNode();
	b = productsNode();
	// One after the other: this suite is about the cache, not about concurrent migrations.
	await a.start();
	await b.start();
	await waitFor("both cachers to be connected to Redis", () => cachers.every(c => c.available));
	redis = redisClient();
});

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	for (const proxy of proxies) proxy.resume();
	await Promise.all([a?.stop(), b?.stop(), ...extra.map(x => x.stop())]);
	await Promise.all(proxies.map(proxy => proxy.close()));
	redis?.disconnect();
	await deleteKeysWithPrefix(prefix);
	await dbs.drop();
});

const entityKey = (id: number) => `${prefix}products:entity:${id}`;

async function read(broker: ServiceBroker, id: number): Promise<{ product: Product; cache?: string }> {
	const meta: CacheMeta = {};
	const product = await broker.call<Product, { id: number }>("products.get", { id }, { meta });
	return { product, cache: meta.$cache };
}

let skuSeq = 0;
function create(broker: ServiceBroker, overrides: Partial<Product> = {}): Promise<Product> {
	return broker.call("products.create", { sku: `TWO-${++skuSeq}`, name: "Cezve", category: "kitchen", priceCents: 1000, stock: 5, ...overrides });
}

describe("two products brokers sharing PostgreSQL and Redis", () => {
	it("runs two brokers with separate cachers on the same Redis prefix", () => {
		expect(a!.nodeID).not.toBe(b!.nodeID);
		expect(a!.cacher).not.toBe(b!.cacher);
		expect(cachers.map(c => c.prefix)).toEqual([prefix, prefix]);
	});

	it("never leaves a stale read on B after an update through A (20 rounds)", async () => {
		const p = await create(a!);
		for (let round = 1; round <= 20; round++) {
			const before = await read(b!, p.id);
			if (round > 1) expect(before.cache).toBe("HIT");
			// The entry B serves from really is in the shared Redis, with the old value.
			expect((await cachedValue<Product>(redis!, entityKey(p.id)))?.priceCents).toBe(before.product.priceCents);

			const price = 1000 + round;
			const name = `Cezve r${round}`;
			const updated = await a!.call<Product, object>("products.update", { id: p.id, priceCents: price, name });
			expect(updated).toMatchObject({ priceCents: price, name });

			const after = await read(b!, p.id);
			expect(after.cache).toBe("MISS");
			expect(after.product).toMatchObject({ priceCents: price, name });
			expect((await read(a!, p.id)).product).toEqual(after.product);
		}
		expect(await pgQuery(dbs.names.products, "SELECT price_cents FROM products WHERE id = $1", [p.id])).toEqual([{ price_cents: 1020 }]);
	});

	it("never serves the old value to a reader on B that started after A's update answered, with readers running throughout", async () => {
		const p = await create(a!, { stock: 0 });
		for (let round = 1; round <= 20; round++) {
			// Odd rounds: B's cache holds the current value, readers HIT until the write deletes it.
			// Even rounds: the entry has just expired, so the first readers fill it while A writes.
			if (round % 2 === 1) await read(b!, p.id);
			else await redis!.del(entityKey(p.id));
			const stock = round;
			let answered = false;
			const reads: Array<Promise<{ startedAfterAnswer: boolean; stock: number }>> = [];
			const launch = () => {
				const startedAfterAnswer = answered;
				reads.push(read(b!, p.id).then(r => ({ startedAfterAnswer, stock: r.product.stock })));
			};
			for (let i = 0; i < 20; i++) launch();
			const write = a!.call<Product, object>("products.update", { id: p.id, stock }).then(r => {
				answered = true;
				return r;
			});
			// Two more readers every millisecond until the write answers (bounded, should it hang).
			while (!answered && reads.length < 2000) {
				launch();
				launch();
				await sleep(1);
			}
			for (let i = 0; i < 10; i++) {
				launch();
				launch();
				await sleep(1);
			}
			expect((await write).stock).toBe(stock);
			const results = await Promise.all(reads);

			const stale = results.filter(r => r.startedAfterAnswer && r.stock !== stock);
			expect(stale).toEqual([]);
			// Reads before the answer see the old or the new value, nothing else.
			for (const r of results) expect([stock - 1, stock]).toContain(r.stock);
			expect((await read(b!, p.id)).product.stock).toBe(stock);
		}
	});

	it("drops a product deleted through A from B's reads at once", async () => {
		const p = await create(a!);
		expect((await read(b!, p.id)).product.id).toBe(p.id);
		expect((await read(b!, p.id)).cache).toBe("HIT");
		await a!.call("products.remove", { id: p.id });
		expect(await redis!.exists(entityKey(p.id))).toBe(0);
		await expect(b!.call("products.get", { id: p.id })).rejects.toMatchObject({ code: 404, type: "NOT_FOUND" });
	});

	it("shows a product created through A in B's cached list at once", async () => {
		const list = async () => {
			const meta: CacheMeta = {};
			const res = await b!.call<{ total: number; rows: Product[] }, object>("products.list", { category: "two-lists" }, { meta });
			return { ...res, cache: meta.$cache };
		};
		await create(a!, { category: "two-lists" });
		expect((await list()).total).toBe(1);
		expect((await list()).cache).toBe("HIT");
		const second = await create(a!, { category: "two-lists" });
		const after = await list();
		expect(after.cache).toBe("MISS");
		expect(after.total).toBe(2);
		expect(after.rows.map(r => r.id)).toContain(second.id);
	});

	it("never lets a fill that read the row before A's commit land after A's delete", async () => {
		// C is a third products node whose Redis traffic goes through a proxy the test can stall.
		const target = new URL(SERVERS.redis);
		const proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 6379) });
		proxies.push(proxy);
		const c = productsNode(proxy.url("redis"));
		extra.push(c);
		await c.start();
		await waitFor("C's cacher to be connected", () => (c.cacher as SafeRedisCacher).available);

		const p = await create(a!, { stock: 1 });
		expect(await redis!.exists(entityKey(p.id))).toBe(0);

		// 1. C misses and goes to the database, where the table is locked: its read waits.
		const blocker = new Client({ connectionString: pgUrl(dbs.names.products) });
		await blocker.connect();
		let fill: Promise<{ product: Product }> | undefined;
		try {
			await blocker.query("BEGIN");
			await blocker.query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE");
			fill = read(c, p.id);
			await waitFor("C's read to wait for the table lock", async () => {
				const rows = await pgQuery(dbs.names.products, "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE 'SELECT%products%'", [dbs.names.products]);
				return rows.length > 0;
			}, 10_000, 10);

			// 2. C's network to Redis stalls; the lock goes; C reads the old row and sends its
			//    cache write, which the proxy holds.
			proxy.pause();
			await blocker.query("COMMIT");
		} finally {
			await blocker.end();
		}
		await waitFor("C to send the old row to Redis", () => proxy.heldBytes > 0, 10_000, 5);

		// 3. A writes the new value. It answers only once no fill from before its commit can land.
		let answered = false;
		const write = a!.call<Product, object>("products.update", { id: p.id, stock: 2 }).then(r => {
			answered = true;
			return r;
		});
		await waitFor("A to commit", async () => {
			if (answered) return true;
			const rows = await pgQuery<{ stock: number }>(dbs.names.products, "SELECT stock FROM products WHERE id = $1", [p.id]);
			// Committed; A has answered (a fill that takes no lock would now land after A's delete) or
			// is kept from deleting by the lock C's fill holds.
			return rows[0].stock === 2 && (await redis!.exists(`${entityKey(p.id)}-lock`)) === 1;
		}, 10_000, 10);

		// 4. C's stalled write reaches Redis.
		proxy.resume();
		expect((await write).stock).toBe(2);
		expect((await fill!).product.stock).toBe(1); // C's read started before the write

		// Every read after A's answer sees the new value, on every node.
		for (const node of [b!, c, a!]) expect((await read(node, p.id)).product.stock).toBe(2);
		expect((await cachedValue<Product>(redis!, entityKey(p.id)))?.stock).toBe(2);
	});
});
