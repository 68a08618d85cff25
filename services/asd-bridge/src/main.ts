#!/usr/bin/env node
import { runPostroomService } from "@postroom/runtime";
import { AsdBridge } from "./bridge.js";

await runPostroomService({
  name: "asd-bridge",
  database: true,
  async start({ nc, names, config, pool, logger, env }) {
    const tenant = env.POSTROOM_TENANT || undefined;
    const bridge = new AsdBridge({ nc, names, config, pool: pool!, logger, ...(tenant ? { tenant } : {}) });
    await bridge.start();
    return bridge;
  },
});
