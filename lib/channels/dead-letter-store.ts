/**
 * The in-process adapter's dead-letter table: `${dataDir}/channels.sqlite`, table `dead_letters`.
 * One row per message a consumer group failed `maxRetries` times, with its payload and every header.
 * `replay_requested_at` is how `npm run dlq -- replay` (another process) asks the running process
 * to replay a row: the adapter polls for it, because only that process has the handlers.
 */
import fs from "node:fs";
import path from "node:path";
import sqlite3 from "sqlite3";
import type { DeadLetter } from "./types";

export interface DeadLetterRow {
	id: number;
	message_id: string | null;
	grp: string;
	channel: string;
	event: string;
	payload: Buffer;
	headers: string;
	error: string | null;
	attempts: number;
	dead_at: string;
	replay_count: number;
	replay_requested_at: string | null;
}

export interface NewDeadLetter {
	messageId: string | null;
	group: string;
	channel: string;
	event: string;
	payload: Buffer;
	headers: Record<string, unknown>;
	error: string;
	attempts: number;
	deadAt: string;
}

export interface RowFilter {
	group?: string;
	messageId?: string;
	all?: boolean;
	ids?: number[];
	limit?: number;
}

const SCHEMA = [
	`CREATE TABLE IF NOT EXISTS dead_letters (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		message_id TEXT,
		grp TEXT NOT NULL,
		channel TEXT NOT NULL,
		event TEXT NOT NULL,
		payload BLOB NOT NULL,
		headers TEXT NOT NULL,
		error TEXT,
		attempts INTEGER NOT NULL,
		dead_at TEXT NOT NULL,
		replay_count INTEGER NOT NULL DEFAULT 0,
		replay_requested_at TEXT
	)`,
	"CREATE INDEX IF NOT EXISTS dead_letters_group ON dead_letters (grp, id)",
	"CREATE INDEX IF NOT EXISTS dead_letters_message ON dead_letters (message_id)",
];

export class DeadLetterStore {
	private db: sqlite3.Database | null = null;

	constructor(readonly file: string) {}

	static inDir(dataDir: string): DeadLetterStore {
		return new DeadLetterStore(path.join(dataDir, "channels.sqlite"));
	}

	async open(): Promise<void> {
		if (this.db) return;
		fs.mkdirSync(path.dirname(this.file), { recursive: true });
		this.db = await new Promise<sqlite3.Database>((resolve, reject) => {
			const db = new sqlite3.Database(this.file, err => (err ? reject(err) : resolve(db)));
		});
		// The CLI reads and flags rows while the service process writes: wait for the lock, don't fail.
		this.db.configure("busyTimeout", 5000);
		await this.run("PRAGMA journal_mode = WAL");
		for (const sql of SCHEMA) await this.run(sql);
	}

	async close(): Promise<void> {
		const db = this.db;
		this.db = null;
		if (db) await new Promise<void>((resolve, reject) => db.close(err => (err ? reject(err) : resolve())));
	}

	private handle(): sqlite3.Database {
		if (!this.db) throw new Error(`the dead-letter table ${this.file} is not open`);
		return this.db;
	}

	private run(sql: string, params: unknown[] = []): Promise<{ lastID: number; changes: number }> {
		const db = this.handle();
		return new Promise((resolve, reject) =>
			db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
				if (err) reject(err);
				else resolve({ lastID: this.lastID, changes: this.changes });
			}),
		);
	}

	private all<T>(sql: string, params: unknown[] = []): Promise<T[]> {
		const db = this.handle();
		return new Promise((resolve, reject) => db.all(sql, params, (err: Error | null, rows: T[]) => (err ? reject(err) : resolve(rows))));
	}

	async insert(d: NewDeadLetter): Promise<number> {
		const { lastID } = await this.run(
			"INSERT INTO dead_letters (message_id, grp, channel, event, payload, headers, error, attempts, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
			[d.messageId, d.group, d.channel, d.event, d.payload, JSON.stringify(d.headers), d.error, d.attempts, d.deadAt],
		);
		return lastID;
	}

	private where(f: RowFilter): { sql: string; params: unknown[] } {
		const clauses: string[] = [];
		const params: unknown[] = [];
		if (f.group) {
			clauses.push("grp = ?");
			params.push(f.group);
		}
		if (f.ids) {
			if (f.ids.length === 0) clauses.push("0");
			else clauses.push(`id IN (${f.ids.map(() => "?").join(", ")})`);
			params.push(...f.ids);
		} else if (!f.all && f.messageId !== undefined) {
			clauses.push("message_id = ?");
			params.push(f.messageId);
		}
		return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
	}

	async select(f: RowFilter = {}): Promise<DeadLetterRow[]> {
		const w = this.where(f);
		return this.all<DeadLetterRow>(`SELECT * FROM dead_letters ${w.sql} ORDER BY id LIMIT ?`, [...w.params, f.limit ?? 1000]);
	}

	async count(group: string): Promise<number> {
		const w = this.where({ group });
		const [row] = await this.all<{ n: number }>(`SELECT count(*) AS n FROM dead_letters ${w.sql}`, w.params);
		return Number(row?.n ?? 0);
	}

	async remove(id: number): Promise<void> {
		await this.run("DELETE FROM dead_letters WHERE id = ?", [id]);
	}

	/** A replay that failed again: the row stays, with the new error and no pending request. */
	async failedAgain(id: number, error: string, attempts: number, headers: Record<string, unknown>): Promise<void> {
		await this.run(
			"UPDATE dead_letters SET error = ?, attempts = ?, headers = ?, dead_at = ?, replay_count = replay_count + 1, replay_requested_at = NULL WHERE id = ?",
			[error, attempts, JSON.stringify(headers), new Date().toISOString(), id],
		);
	}

	async clearReplayRequest(id: number, error: string): Promise<void> {
		await this.run("UPDATE dead_letters SET replay_requested_at = NULL, error = ? WHERE id = ?", [error, id]);
	}

	/** Flags the matching rows for the running process to replay; returns their ids. */
	async requestReplay(f: RowFilter): Promise<number[]> {
		if (!f.all && f.messageId === undefined) throw new Error("replay needs a messageId or all");
		const rows = await this.select({ ...f, limit: f.limit ?? 100_000 });
		const ids = rows.map(r => r.id);
		if (ids.length) {
			const w = this.where({ ids });
			await this.run(`UPDATE dead_letters SET replay_requested_at = ? ${w.sql}`, [new Date().toISOString(), ...w.params]);
		}
		return ids;
	}

	async replayRequested(limit = 100): Promise<DeadLetterRow[]> {
		return this.all<DeadLetterRow>("SELECT * FROM dead_letters WHERE replay_requested_at IS NOT NULL ORDER BY id LIMIT ?", [limit]);
	}
}

/**
 * A stored row as the operations show it; `deserialize` is the adapter's serializer when there is
 * one (JSON otherwise). A payload that does not parse is shown as base64.
 */
export function rowToDeadLetter(row: DeadLetterRow, deserialize: (buf: Buffer) => unknown = buf => JSON.parse(buf.toString("utf8"))): DeadLetter {
	let payload: unknown;
	try {
		payload = deserialize(row.payload);
	} catch {
		payload = { base64: row.payload.toString("base64") };
	}
	return {
		id: row.id,
		messageId: row.message_id,
		group: row.grp,
		event: row.event,
		channel: row.channel,
		attempts: row.attempts,
		error: row.error,
		deadAt: row.dead_at,
		headers: JSON.parse(row.headers),
		payload,
	};
}
