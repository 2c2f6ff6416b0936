/* Test module: a shared object that is not a qlens plugin (no entry symbol). */
int not_a_plugin(int x);
int not_a_plugin(int x) { return x + 1; }
