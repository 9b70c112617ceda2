/**
 * The gateway's memory of accepted tokens (services/api/token-cache.ts): the class on a clock of
 * its own, then through HTTP, counting the calls that reach users.resolveToken.
 */
import jwt from "jsonwebtoken";
import type { Middleware, ServiceBroker } from "moleculer";
import { TokenCache } from "../../services/api/token-cache";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http } from "../support/http";

const user = { id: 7, role: "customer" as const };
const tokenUntil = (expSeconds: number) => jwt.sign({ role: "customer" }, "a-secret-of-some-length", { subject: "7", expiresIn: expSeconds });

describe("TokenCache", () => {
	let now = 1_000_000;
	const clock = () => now;

	it("answers an accepted token until its TTL, then forgets it", () => {
		const cache = new TokenCache(30_000, 10, clock);
		const t = tokenUntil(3600);
		cache.set(t, user);
		now += 29_999;
		expect(cache.get(t)).toEqual(user);
		now += 1;
		expect(cache.get(t)).toBeUndefined();
		expect(cache.size).toBe(0);
	});

	it("never answers a token past its own expiry", () => {
		now = Date.now();
		const cache = new TokenCache(3_600_000, 10, clock);
		const t = tokenUntil(10);
		cache.set(t, user);
		now += 9_000;
		expect(cache.get(t)).toEqual(user);
		now += 2_000;
		expect(cache.get(t)).toBeUndefined();
	});

	it("keeps nothing with a TTL of 0, nor a token without an expiry or that is no JWT", () => {
		now = Date.now();
		const off = new TokenCache(0, 10, clock);
		off.set(tokenUntil(3600), user);
		expect(off.size).toBe(0);
		const cache = new TokenCache(30_000, 10, clock);
		cache.set(jwt.sign({ role: "customer" }, "a-secret-of-some-length", { subject: "7" }), user);
		cache.set("not-a-token", user);
		cache.set("a.%%%.b", user);
		expect(cache.size).toBe(0);
	});

	it("holds at most its size, forgetting the oldest first", () => {
		now = Date.now();
		const cache = new TokenCache(30_000, 2, clock);
		const [a, b, c] = [3600, 3601, 3602].map(tokenUntil);
		cache.set(a, user);
		cache.set(b, user);
		cache.set(c, user);
		expect(cache.size).toBe(2);
		expect(cache.get(a)).toBeUndefined();
		expect(cache.get(b)).toEqual(user);
		expect(cache.get(c)).toEqual(user);
	});

	it("answers a copy: a request that changes its user changes no other's", () => {
		now = Date.now();
		const cache = new TokenCache(30_000, 10, clock);
		const t = tokenUntil(3600);
		cache.set(t, user);
		(cache.get(t) as { role: string }).role = "admin";
		expect(cache.get(t)).toEqual(user);
	});
});

describe("through the gateway", () => {
	let calls = 0;
	const counter: Middleware = {
		name: "CountResolveToken",
		localAction(handler: (ctx: unknown) => unknown, action: { name: string }) {
			if (action.name !== "users.resolveToken") return handler;
			return (ctx: unknown) => {
				calls++;
				return handler(ctx);
			};
		},
	} as unknown as Middleware;

	async function gateway(authCacheTtlMs: number): Promise<{ broker: ServiceBroker; base: string; remove(): Promise<void> }> {
		const tmp = tempDir();
		const broker = createNode({
			services: ["api", "users"],
			databaseUrls: sqliteUrls(tmp.dir, ["users"]),
			settings: { api: { authCacheTtlMs } },
			middlewares: [counter],
			// users.registered would wait for a notifications group this node does not have.
			channels: false,
		});
		await broker.start();
		return {
			broker,
			base: gatewayUrl(broker),
			remove: async () => {
				await broker.stop();
				tmp.remove();
			},
		};
	}

	const deleteUser = (broker: ServiceBroker, id: number) =>
		(broker.getLocalService("users") as unknown as { sequelize: { query(sql: string): Promise<unknown> } }).sequelize.query(`DELETE FROM users WHERE id = ${Number(id)}`);

	it("asks users once for a token it accepted, and every time for one it refused", async () => {
		const g = await gateway(30_000);
		try {
			const reg = await http(g.base, "POST", "/api/users/register", { body: { email: "once@token.test", password: "password-123", name: "Once" } });
			calls = 0;
			for (let i = 0; i < 3; i++) expect((await http(g.base, "GET", "/api/users/me", { token: reg.body.token })).status).toBe(200);
			expect(calls).toBe(1);
			const forged = jwt.sign({ role: "admin" }, "another-secret-of-enough-length", { subject: String(reg.body.user.id), expiresIn: 3600 });
			calls = 0;
			for (let i = 0; i < 2; i++) expect((await http(g.base, "GET", "/api/users/me", { token: forged })).status).toBe(401);
			expect(calls).toBe(2);
		} finally {
			await g.remove();
		}
	});

	it("with AUTH_CACHE_TTL=0 asks every time, so a deleted user's token is refused at once", async () => {
		const g = await gateway(0);
		try {
			const reg = await http(g.base, "POST", "/api/users/register", { body: { email: "gone@token.test", password: "password-123", name: "Gone" } });
			calls = 0;
			expect((await http(g.base, "GET", "/api/users/me", { token: reg.body.token })).status).toBe(200);
			await deleteUser(g.broker, reg.body.user.id);
			expect((await http(g.base, "GET", "/api/users/me", { token: reg.body.token })).status).toBe(401);
			expect(calls).toBe(2);
		} finally {
			await g.remove();
		}
	});
});
