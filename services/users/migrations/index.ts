import type { Migration } from "../../../mixins/db.mixin";
import { outboxMigration, outboxTraceMigration } from "../../../mixins/outbox.mixin";
import { createUsers } from "./0001-create-users";

/** In order; a migration, once released, is never edited: add the next one. */
export const migrations: Migration[] = [createUsers, outboxMigration("0002-create-outbox"), outboxTraceMigration("0003-outbox-trace")];
