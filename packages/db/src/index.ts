export { migrate } from "./migrate.js";
export { migrations } from "./migrations.js";
export type { Migration } from "./migrations.js";
export { createPool } from "./pool.js";
export type { Pool, PoolClient } from "./pool.js";
