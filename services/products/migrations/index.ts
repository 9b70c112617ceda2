import type { Migration } from "../../../mixins/db.mixin";
import { createProducts } from "./0001-create-products";

/** In order; a migration, once released, is never edited: add the next one. */
export const migrations: Migration[] = [createProducts];
