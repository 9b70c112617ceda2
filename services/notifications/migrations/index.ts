import type { Migration } from "../../../mixins/db.mixin";
import { createNotifications } from "./0001-create-notifications";

/** In order; a migration, once released, is never edited: add the next one. */
export const migrations: Migration[] = [createNotifications];
