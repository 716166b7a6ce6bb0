-- wrk script: POST the quickstart's 16-float body.
wrk.method = "POST"
wrk.body = '{"x": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0]}'
wrk.headers["Content-Type"] = "application/json"
