import type { Migration } from "../../../mixins/db.mixin";
import { outboxMigration, outboxTraceMigration } from "../../../mixins/outbox.mixin";
import { createOrders } from "./0001-create-orders";
import { historyIndex } from "./0004-history-index";

/** In order; a migration, once released, is never edited: add the next one. */
export const migrations: Migration[] = [createOrders, outboxMigration("0002-create-outbox"), outboxTraceMigration("0003-outbox-trace"), historyIndex];
