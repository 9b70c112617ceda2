import type { Migration } from "../../../mixins/db.mixin";
import { createUsers } from "./0001-create-users";

/** In order; a migration, once released, is never edited: add the next one. */
export const migrations: Migration[] = [createUsers];
