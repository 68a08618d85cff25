#!/usr/bin/env node
// The database set-up as a command (the image's `db-setup`, the chart's Job; `postroom up` calls
// runDatabaseSetup itself): migrations as the owner, then roles and grants. Reads POSTROOM_CONFIG
// and DATABASE_URL (the owner's URL) like a service, and the login users' passwords from
// database.users or DATABASE_USER_<SERVICE> / DATABASE_PASSWORD_<SERVICE>. Exits 0 when done.
import { loadConfig } from "@postroom/config";
import { createLogger, errorFields } from "@postroom/telemetry";
import { runDatabaseSetup } from "./database-setup.js";

const logger = createLogger({ service: "db-setup" });
try {
  const config = await loadConfig(process.env);
  const result = await runDatabaseSetup(config, process.env);
  if (result.unmapped.length > 0) logger.warn({ tables: result.unmapped }, "tables without an owner in the ownership map: no service role may use them");
  logger.info({ migrated: result.migrated, logins: result.logins, prefix: result.prefix }, "database set up: migrations applied, roles granted from the ownership map");
} catch (error) {
  logger.error({ ...errorFields(error) }, "database set-up failed");
  process.exitCode = 1;
}
