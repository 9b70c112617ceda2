/**
 * Redis cut during reads and writes (a TCP proxy between the cacher and Redis): every read and
 * write answers 200 from PostgreSQL throughout, and no read ever returns a price older than one
 * already acknowledged to the writer, before, during or after the outage. Prices only go up, so
 * "older" is "smaller": a read that started after the write of price p was answered must see >= p.
 */
import type { ServiceBroker } from "moleculer";
import { SafeRedisCacher } from "../../lib/redis-cacher";
import { createNode, gatewayUrl, uniqueId } from "../support/broker";
import { http, login } from "../support/http";
import { TestDatabases, pgQuery } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix } from "../support/redis";
import { SERVERS, requireServers } from "../support/servers";
import { TcpProxy } from "../support/tcp-proxy";
import { sleep, waitFor } from "../support/wait";
import { Tally, load, summary } from "../support/faults";

const ADMIN = { email: "admin@faults-redis.test", password: "admin-password-1" };
const namespace = uniqueId("fr");
const dbs = new TestDatabases(["users", "products"] as const);
let proxy: TcpProxy | undefined;
let cacher: SafeRedisCacher;
let broker: ServiceBroker | undefined;
let base: string;
let admin: string;
let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres", "redis");
	serversUp = true;
	await dbs.create();
	const target = new URL(SERVERS.redis);
	proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 6379) });
	cacher = new SafeRedisCacher({ url: proxy.url("redis"), ttl: 300, prefix: `carsi-${namespace}` });
	broker = createNode({ services: ["api", "users", "products"], namespace, databaseUrls: dbs.urls, cacher, settings: { users: { admin: ADMIN } } });
	await broker.start();
	base = gatewayUrl(broker);
	admin = await login(base, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
	if (!serversUp) return;
	proxy?.restore();
	await broker?.stop();
	await proxy?.close();
	await deleteKeysWithPrefix(cachePrefix(namespace));
	await dbs.drop();
});

it("serves reads and writes from PostgreSQL while Redis is cut, and never a stale product", async () => {
	const ids: number[] = [];
	for (let i = 0; i < 6; i++) {
		const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `FR-${i}`, name: `Kilim ${i}`, category: "fr", priceCents: 1000, stock: 5 } });
		expect(res.status).toBe(201);
		ids.push(res.body.id);
	}
	const tally = new Tally();
	/**
	 * Per product: the acknowledged prices, each with when its answer arrived on the test's clock,
	 * which counts events rather than milliseconds: an answer and a read started within the same
	 * millisecond are still in the order they happened (with Date.now() such a read, sent before
	 * the answer came, counted as after it).
	 */
	let clock = 0;
	const acked = new Map<number, Array<{ at: number; price: number }>>(ids.map(id => [id, [{ at: 0, price: 1000 }]]));
	const stale: string[] = [];
	const unexpected: string[] = [];
	let nextPrice = 1000;
	const t0 = Date.now();
	const marks: string[] = [];

	const readers = load(4, async (w, i) => {
		const id = ids[(w + i) % ids.length];
		const started = ++clock;
		const startedMs = Date.now() - t0;
		const list = i % 4 === 0;
		const res = await tally.send(base, "GET", list ? "/api/products?category=fr&pageSize=10" : `/api/products/${id}`);
		if (res.status !== 200) return unexpected.push(`GET ${res.status} ${res.text.slice(0, 200)}`);
		const rows: Array<{ id: number; priceCents: number }> = list ? res.body.rows : [res.body];
		for (const row of rows) {
			// The newest price acknowledged before this read started.
			const floor = acked.get(row.id)!.filter(a => a.at <= started).pop()!.price;
			if (row.priceCents < floor)
				stale.push(`product ${row.id}: read ${row.priceCents} after ${floor} was acknowledged (${list ? "list" : "get"}, ${res.headers.get("x-cache")}, ${startedMs} ms in)`);
		}
	});
	const writer = load(1, async (_w, i) => {
		const id = ids[i % ids.length];
		const price = ++nextPrice;
		const res = await tally.send(base, "PATCH", `/api/products/${id}`, { token: admin, body: { priceCents: price } });
		if (res.status !== 200) return unexpected.push(`PATCH ${res.status} ${res.text.slice(0, 200)}`);
		acked.get(id)!.push({ at: ++clock, price });
		await sleep(20);
	});

	await sleep(1500);
	proxy!.cut();
	marks.push(`cut ${Date.now() - t0} ms in`);
	await waitFor("the cacher to notice Redis is gone", () => !cacher.available);
	marks.push(`down ${Date.now() - t0} ms in`);
	await sleep(2500);
	proxy!.restore();
	marks.push(`restored ${Date.now() - t0} ms in`);
	await waitFor("the cacher to be back", () => cacher.available, 20_000);
	marks.push(`back ${Date.now() - t0} ms in`);
	await sleep(1500);
	await Promise.all([readers.stop(), writer.stop()]);

	// After the load: what every product reads as (twice: MISS, then HIT from Redis) is what PostgreSQL holds.
	const inDb = new Map(
		(await pgQuery<{ id: number; price_cents: number }>(dbs.names.products, "SELECT id, price_cents FROM products")).map(r => [r.id, r.price_cents]),
	);
	const finalMismatch: string[] = [];
	for (const id of ids) {
		for (let r = 0; r < 2; r++) {
			const res = await tally.send(base, "GET", `/api/products/${id}`);
			if (res.body?.priceCents !== inDb.get(id)) finalMismatch.push(`product ${id}: ${res.body?.priceCents} vs ${inDb.get(id)} in PostgreSQL`);
		}
	}
	const lastAcked = ids.map(id => acked.get(id)!.at(-1)!.price);
	const invariants = {
		"every answer 200": unexpected.length === 0 && tally.statuses().join() === "200",
		"no read older than an acknowledged write": stale.length === 0,
		"reads after the outage equal PostgreSQL": finalMismatch.length === 0,
		"PostgreSQL holds every acknowledged write": ids.every((id, k) => inDb.get(id) === lastAcked[k]),
	};
	summary("Redis cut for 2.5 s during reads and writes", tally, invariants);
	expect(unexpected).toEqual([]);
	expect({ stale, marks }).toEqual({ stale: [], marks });
	expect(finalMismatch).toEqual([]);
	expect(ids.map(id => inDb.get(id))).toEqual(lastAcked);
	expect(tally.statuses()).toEqual([200]);
	expect(tally.byStatus.get(200)).toBeGreaterThan(100);
}, 60_000);
