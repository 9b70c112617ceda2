/**
 * users on a broker of its own (SQLite, Memory cacher): accounts, hashes, tokens, the seeded admin.
 */
import jwt from "jsonwebtoken";
import { ServiceBroker } from "moleculer";
import { createNode, sqliteUrls, tempDir } from "../support/broker";
import { createSequelize } from "../../mixins/db.mixin";

const SECRET = process.env.JWT_SECRET!;
const ADMIN = { email: "root@test.local", password: "root-password-1" };
let broker: ServiceBroker;
let tmp: ReturnType<typeof tempDir>;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({ services: ["users"], databaseUrls: sqliteUrls(tmp.dir, ["users"]), settings: { users: { admin: ADMIN, jwtSecret: SECRET } } });
	await broker.start();
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

const register = (email: string) => broker.call<any, any>("users.register", { email, password: "password-123", name: "N" });

it("stores a scrypt hash, never the password", async () => {
	await register("hash@example.com");
	const db = createSequelize(sqliteUrls(tmp.dir, ["users"]).users);
	const [rows] = await db.query("SELECT password_hash FROM users WHERE email = 'hash@example.com'");
	await db.close();
	expect((rows as Array<{ password_hash: string }>)[0].password_hash).toMatch(/^scrypt\$16384\$8\$1\$/);
});

it("writes user.registered to its outbox in the registration's transaction", async () => {
	const { user } = await register("event@example.com");
	const db = createSequelize(sqliteUrls(tmp.dir, ["users"]).users);
	const [rows] = await db.query("SELECT event_id, event, payload FROM outbox WHERE event = 'user.registered'");
	await db.close();
	const payloads = (rows as Array<{ event_id: string; payload: string }>).map(r => ({ id: r.event_id, ...JSON.parse(r.payload) }));
	expect(payloads).toContainEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), eventId: expect.any(String), occurredAt: expect.any(String), user });
	const mine = payloads.find(p => p.user.id === user.id)!;
	expect(mine.id).toBe(mine.eventId);
});

it("writes no outbox row for a refused registration", async () => {
	await register("once@example.com");
	await expect(register("once@example.com")).rejects.toMatchObject({ type: "EMAIL_TAKEN" });
	const db = createSequelize(sqliteUrls(tmp.dir, ["users"]).users);
	const [rows] = await db.query("SELECT payload FROM outbox");
	await db.close();
	expect((rows as Array<{ payload: string }>).filter(r => JSON.parse(r.payload).user.email === "once@example.com")).toHaveLength(1);
});

it("seeds the admin once, with the admin role", async () => {
	const { user } = await broker.call<any, any>("users.login", ADMIN);
	expect(user.role).toBe("admin");
	// A second start of the service finds the admin and creates nothing.
	const again = createNode({ services: ["users"], databaseUrls: sqliteUrls(tmp.dir, ["users"]), settings: { users: { admin: ADMIN } } });
	await again.start();
	await again.stop();
	const db = createSequelize(sqliteUrls(tmp.dir, ["users"]).users);
	const [rows] = await db.query("SELECT count(*) AS n FROM users WHERE role = 'admin'");
	await db.close();
	expect(Number((rows as Array<{ n: number }>)[0].n)).toBe(1);
});

it("registers concurrent sign-ups of one email exactly once", async () => {
	const results = await Promise.allSettled(Array.from({ length: 8 }, () => register("race@example.com")));
	expect(results.filter(r => r.status === "fulfilled")).toHaveLength(1);
	for (const r of results.filter(r => r.status === "rejected")) expect((r as PromiseRejectedResult).reason.type).toBe("EMAIL_TAKEN");
});

describe("resolveToken", () => {
	let userId: number;
	let token: string;
	beforeAll(async () => {
		({ user: { id: userId }, token } = await register("token@example.com"));
	});
	const resolve = (t: string) => broker.call("users.resolveToken", { token: t });

	it("resolves its own token to the user's id and role", async () => {
		await expect(resolve(token)).resolves.toEqual({ id: userId, role: "customer" });
	});

	it.each([
		["expired", () => jwt.sign({ role: "customer" }, SECRET, { subject: String(userId), expiresIn: -10 })],
		["signed with another key", () => jwt.sign({ role: "admin" }, "another-secret", { subject: String(userId) })],
		["alg none", () => jwt.sign({ role: "admin" }, "", { subject: String(userId), algorithm: "none" })],
		["HS512 with the right key", () => jwt.sign({ role: "admin" }, SECRET, { subject: String(userId), algorithm: "HS512" })],
		["without a subject", () => jwt.sign({ role: "admin" }, SECRET)],
		["garbage", () => "a.b.c"],
	])("refuses a token that is %s with 401", async (_name, make) => {
		await expect(resolve(make())).rejects.toMatchObject({ code: 401, type: "UNAUTHORIZED" });
	});

	it("refuses the token of a deleted user", async () => {
		const { user, token: t } = await register("deleted@example.com");
		const db = createSequelize(sqliteUrls(tmp.dir, ["users"]).users);
		await db.query(`DELETE FROM users WHERE id = ${Number(user.id)}`);
		await db.close();
		await expect(resolve(t)).rejects.toMatchObject({ code: 401 });
	});

	it("takes the role from the database, not from the token", async () => {
		const forged = jwt.sign({ role: "admin" }, SECRET, { subject: String(userId) });
		await expect(resolve(forged)).resolves.toEqual({ id: userId, role: "customer" });
	});
});

it("is not reachable through the gateway: resolveToken is public, not published", () => {
	const action = broker.registry.getActionList({}).find((a: any) => a.name === "users.resolveToken") as any;
	expect(action.action.visibility).toBe("public");
});

it("gives internal callers a user's id, email and name (users.contact), 404 for an unknown id", async () => {
	const { user } = await register("contact@example.com");
	await expect(broker.call("users.contact", { id: user.id })).resolves.toEqual({ id: user.id, email: "contact@example.com", name: "N" });
	await expect(broker.call("users.contact", { id: 999_999 })).rejects.toMatchObject({ code: 404, type: "NOT_FOUND" });
	const action = broker.registry.getActionList({}).find((a: any) => a.name === "users.contact") as any;
	expect(action.action.visibility).toBe("public");
});
