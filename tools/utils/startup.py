"""Imported first by every command line, before anything loads paddle: the
math library reads its thread and kernel settings, and Paddle its log
level, once, when they load (runtime.configure_threads, quiet_third_party).
-v / --verbose on the command line keeps third-party output."""
import sys

from tools.utils.runtime import configure_threads, quiet_third_party

configure_threads()
quiet_third_party(verbose=any(arg in ("-v", "--verbose") for arg in sys.argv[1:]))
