"""The benchmark suite (`make bench`): the service as deployed, measured side by side with the
floor its stack imposes and the limits of its stores. See README "Performance"."""
