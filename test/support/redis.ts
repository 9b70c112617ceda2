/**
 * Redis as the tests see it: a direct client (never through a proxy) to look at the keys a
 * cacher wrote, and the clean-up of every key of a run's prefix.
 */
import Redis from "ioredis";
import { SERVERS } from "./servers";

/** The key prefix of the cacher of `namespace` (lib/cacher.ts buildCacher: `carsi-<namespace>`, plus Moleculer's "-"). */
export function cachePrefix(namespace: string): string {
	return `carsi-${namespace}-`;
}

export function redisClient(): Redis {
	const client = new Redis(SERVERS.redis, { maxRetriesPerRequest: 1, connectTimeout: 3000 });
	client.on("error", () => undefined);
	return client;
}

/** Every key that starts with `prefix`. */
export async function keysWithPrefix(client: Redis, prefix: string): Promise<string[]> {
	const keys: string[] = [];
	let cursor = "0";
	do {
		const [next, batch] = await client.scan(cursor, "MATCH", `${escapeGlob(prefix)}*`, "COUNT", 1000);
		keys.push(...batch);
		cursor = next;
	} while (cursor !== "0");
	return keys;
}

/** Deletes every key that starts with `prefix`; returns how many there were. */
export async function deleteKeysWithPrefix(prefix: string): Promise<number> {
	if (prefix.length < 8 || !prefix.startsWith("carsi-")) throw new Error(`refusing to delete keys of the prefix "${prefix}"`);
	const client = redisClient();
	try {
		const keys = await keysWithPrefix(client, prefix);
		for (let i = 0; i < keys.length; i += 500) await client.del(...keys.slice(i, i + 500));
		return keys.length;
	} finally {
		client.disconnect();
	}
}

/** The value a Moleculer Redis cacher stored under `key` (JSON serializer), or null. */
export async function cachedValue<T = unknown>(client: Redis, key: string): Promise<T | null> {
	const raw = await client.get(key);
	return raw == null ? null : (JSON.parse(raw) as T);
}

function escapeGlob(s: string): string {
	return s.replace(/[*?[\]\\]/g, c => `\\${c}`);
}
