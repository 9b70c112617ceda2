/**
 * The outbox's hand-off and poll on PostgreSQL: the cases of test/unit/outbox.spec.ts.
 */
import { outboxCases } from "../support/outbox";
import { requireServers } from "../support/servers";
import { TestDatabases } from "../support/pg";

const dbs = new TestDatabases(["ledger"] as const);

beforeAll(async () => {
	await requireServers("postgres");
	await dbs.create();
});
afterAll(async () => {
	await dbs.drop();
});

outboxCases(() => dbs.urls.ledger);
