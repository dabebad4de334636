// Live refresh by polling: the API's event stream is Server-Sent Events, and a browser's
// EventSource cannot send the Authorization header; a poll costs the API one query.

/** Calls `tick` now and again `interval` ms after each call has ended (calls never
 * overlap), until `stop()` or until `tick` returns false. While the tab is hidden the
 * calls wait. `now()` calls again at once (after the call in flight, if one is). */
export function poll(tick, interval) {
  let timer = null;
  let running = false;
  let again = false;
  let stopped = false;

  async function run() {
    clearTimeout(timer);
    timer = null;
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    if (document.hidden) {
      timer = setTimeout(run, interval);
      return;
    }
    running = true;
    let more = true;
    try {
      more = (await tick()) !== false;
    } catch (error) {
      console.error(error);
    } finally {
      running = false;
    }
    if (stopped) return;
    if (again) {
      again = false;
      run();
    } else if (more) {
      timer = setTimeout(run, interval);
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now: run,
  };
}
