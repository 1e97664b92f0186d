// npm `ws` echo clients for the WebSocket evacuation test: the same protocol
// as ws_echo_client.py. Each client sends numbered messages one at a time,
// checks each echo, records close codes, reconnects and resends the
// unanswered message. Prints one JSON line per client at the end.
//
// Usage: WS_MODULE_DIR=scripts/node node ws_echo_client.mjs URL CLIENTS SECONDS
// (WS_MODULE_DIR: the folder whose node_modules holds `ws`)
import { createRequire } from "node:module";
const require = createRequire(process.env.WS_MODULE_DIR + "/");
const WebSocket = require("ws");

const [url, clients, seconds] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const until = Date.now() + seconds * 1000;

function runClient(i) {
  return new Promise((resolve) => {
    const stats = { id: i, echoed: 0, closes: [], errors: [] };
    let n = 0;
    const open = () => {
      if (Date.now() >= until) return resolve(stats);
      const ws = new WebSocket(url);
      let finished = false;
      const send = () => {
        if (Date.now() >= until) {
          finished = true;
          ws.close(1000);
          return;
        }
        ws.send(`c${i}-${n}`);
      };
      ws.on("open", send);
      ws.on("message", (data) => {
        const got = data.toString();
        if (got !== `c${i}-${n}`) {
          stats.errors.push(`sent c${i}-${n}, got ${got}`);
          finished = true;
          ws.terminate();
          return;
        }
        stats.echoed += 1;
        n += 1;
        setTimeout(send, 5);
      });
      ws.on("error", (e) => stats.errors.push(`socket error: ${e.message}`));
      ws.on("close", (code) => {
        if (finished) return resolve(stats);
        stats.closes.push(code);
        setTimeout(open, 0);
      });
    };
    open();
  });
}

const results = await Promise.all([...Array(clients).keys()].map(runClient));
for (const r of results) console.log(JSON.stringify(r));
