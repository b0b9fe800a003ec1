// Test fixture: a JavaScript plugin that spins forever at RCPT (its time limit must stop it).
export const rcpt = {
  rcpt(recipient, params) {
    let n = 0;
    for (;;) {
      n += 1;
    }
  },
};
