/**
 * The real servers the integration suites run against, and a reachability check for beforeAll.
 * A missing server fails the suite with an error naming it: integration tests never skip.
 * The addresses can be moved with TEST_PG_URL, TEST_REDIS_URL and TEST_AMQP_URL.
 */
import { Client } from "pg";
import Redis from "ioredis";
import amqp from "amqplib";

export const SERVERS = {
	/** The maintenance database: databases of a run are created and dropped through it. */
	postgres: process.env.TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
	redis: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
	rabbitmq: process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672",
} as const;

export type ServerName = keyof typeof SERVERS;

const LABELS: Record<ServerName, string> = { postgres: "PostgreSQL", redis: "Redis", rabbitmq: "RabbitMQ" };
const TIMEOUT_MS = 3000;

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(`no answer from ${what} within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
	});
	return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function checkPostgres(): Promise<void> {
	const client = new Client({ connectionString: SERVERS.postgres, connectionTimeoutMillis: TIMEOUT_MS });
	client.on("error", () => undefined);
	try {
		await client.connect();
		await client.query("SELECT 1");
	} finally {
		await client.end().catch(() => undefined);
	}
}

async function checkRedis(): Promise<void> {
	const client = new Redis(SERVERS.redis, {
		lazyConnect: true,
		enableOfflineQueue: false,
		maxRetriesPerRequest: 0,
		connectTimeout: TIMEOUT_MS,
		retryStrategy: () => null,
	});
	let cause: Error | undefined;
	client.on("error", (err: Error) => (cause ??= err));
	try {
		await client.connect().catch((err: Error) => {
			throw cause ?? err;
		});
		const pong = await client.ping();
		if (pong !== "PONG") throw new Error(`PING answered ${pong}`);
	} finally {
		client.disconnect();
	}
}

async function checkRabbitmq(): Promise<void> {
	const connection = await amqp.connect(SERVERS.rabbitmq, { timeout: TIMEOUT_MS });
	connection.on("error", () => undefined);
	await connection.close();
}

const CHECKS: Record<ServerName, () => Promise<void>> = { postgres: checkPostgres, redis: checkRedis, rabbitmq: checkRabbitmq };

/** The URL without its password, for an error message. */
function masked(url: string): string {
	return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, "$1:****@");
}

/** Throws one error naming every server of `names` that does not answer. */
export async function requireServers(...names: ServerName[]): Promise<void> {
	const failures = await Promise.all(
		names.map(async name => {
			try {
				await withTimeout(CHECKS[name](), LABELS[name]);
				return null;
			} catch (err) {
				return `${LABELS[name]} is not reachable at ${masked(SERVERS[name])}: ${(err as Error).message}`;
			}
		}),
	);
	const missing = failures.filter((f): f is string => f !== null);
	if (missing.length > 0) {
		throw new Error(`The integration tests need their servers running. ${missing.join("; ")}`);
	}
}

