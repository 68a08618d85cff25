#!/usr/bin/env node
import { runPostroomService } from "@postroom/runtime";
import { Archiver } from "./archiver.js";

await runPostroomService({
  name: "archiver",
  database: true,
  async start({ nc, names, config, pool, logger, env }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    const archiver = new Archiver({ nc, names, config, pool: pool!, logger, ...(tenant ? { tenant } : {}) });
    await archiver.start();
    return archiver;
  },
});
