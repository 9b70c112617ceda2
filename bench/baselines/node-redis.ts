/**
 * Baseline: a bare node:http server answering GET /api/products/:id with the product's JSON read
 * from Redis (one ioredis GET, no framework). It seeds its keys (BENCH_PREFIX + id) at start,
 * prints "ready", and deletes them on SIGTERM. Env: PORT, REDIS_URL, BENCH_PREFIX, BENCH_PRODUCTS.
 */
import http from "node:http";
import Redis from "ioredis";
import { product } from "../common";

const port = Number(process.env.PORT);
const prefix = process.env.BENCH_PREFIX!;
const n = Number(process.env.BENCH_PRODUCTS ?? 10_000);
const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");

async function main(): Promise<void> {
	for (let i = 1; i <= n; i += 1000) {
		const p = redis.pipeline();
		for (let id = i; id < Math.min(i + 1000, n + 1); id++) p.set(`${prefix}${id}`, JSON.stringify(product(id)));
		await p.exec();
	}
	const server = http.createServer((req, res) => {
		const m = /^\/api\/products\/(\d+)$/.exec(req.url ?? "");
		if (req.method !== "GET" || !m) {
			res.writeHead(404).end();
			return;
		}
		redis.get(prefix + m[1]).then(
			body => {
				if (body == null) res.writeHead(404, { "Content-Type": "application/json" }).end('{"error":"not found"}');
				else res.writeHead(200, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(body) }).end(body);
			},
			() => res.writeHead(500).end(),
		);
	});
	server.listen(port, "127.0.0.1", () => console.log("ready"));
	process.on("SIGTERM", async () => {
		server.close();
		let cursor = "0";
		do {
			const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
			if (keys.length) await redis.del(...keys);
			cursor = next;
		} while (cursor !== "0");
		redis.disconnect();
		process.exit(0);
	});
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
