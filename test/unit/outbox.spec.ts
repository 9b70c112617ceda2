/**
 * The outbox's hand-off and poll on SQLite (the embedded default); the same cases run on
 * PostgreSQL in test/integration/outbox-postgres.spec.ts.
 */
import { sqliteUrls, tempDir } from "../support/broker";
import { outboxCases } from "../support/outbox";

let tmp: ReturnType<typeof tempDir>;

beforeAll(() => {
	tmp = tempDir();
});
afterAll(() => tmp.remove());

outboxCases(() => sqliteUrls(tmp.dir, ["ledger"]).ledger);
